"""The MSST reference (pip ``msst==0.1.0``, installed with ``--no-deps``: it pins an old
torch) and the public configs in ``../shared/models/msst-configs/``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from daw_bridge.models.msst.config import load_config
from tests.conftest import SHARED

CONFIGS = SHARED / "models" / "msst-configs"


def public_config(name: str) -> dict[str, Any]:
    """A public MSST config by file name (a deep copy: tests may shrink it)."""
    path = CONFIGS / name
    if not path.is_file():
        pytest.skip(f"no {path}: the public MSST configs are in ../shared beside the checkout")
    return copy.deepcopy(load_config(path))


def reference_model(model_type: str, config: dict[str, Any]) -> torch.nn.Module:
    """MSST's own model for ``config``, built as MSST builds it (its ``ConfigDict``)."""
    settings = pytest.importorskip(
        "msst.utils.settings",
        reason="the MSST reference: pip install --no-deps msst==0.1.0 (see README, Tests)",
    )
    from ml_collections import ConfigDict

    return settings.build_model_from_config(model_type, ConfigDict(config)).eval()


def reference_config(config: dict[str, Any]) -> Any:
    from ml_collections import ConfigDict

    return ConfigDict(config)


def config_path(name: str) -> Path:
    return CONFIGS / name
