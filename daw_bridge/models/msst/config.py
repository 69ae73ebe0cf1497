"""MSST model configs: YAML files as MSST publishes them, read without running any code.

MSST reads its configs with PyYAML's full loader; they use one Python-specific
tag, ``!!python/tuple`` (band layouts). Here a safe loader that knows only that
tag reads them: no other Python object can be built from a config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus ``!!python/tuple``."""


def _tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple:
    return tuple(loader.construct_sequence(node, deep=True))  # type: ignore[arg-type]


_ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)


def load_config(path: str | Path) -> dict[str, Any]:
    """The config at ``path`` as plain dicts, lists, tuples, numbers and strings."""
    with open(path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=_ConfigLoader)  # a SafeLoader: no Python objects
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not an MSST model config (a YAML mapping)")
    return document
