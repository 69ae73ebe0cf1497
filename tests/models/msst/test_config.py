"""MSST configs are read as MSST publishes them, without running anything in them."""

from __future__ import annotations

import pytest
import yaml

from daw_bridge.models.msst.config import load_config
from tests.models.msst.conftest import CONFIGS


def test_the_configs_we_ship_are_msst_public_configs_unchanged():
    from importlib import resources

    shipped = resources.files("daw_bridge.models.msst.configs")
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    if not names:
        pytest.skip(f"no public MSST configs in {CONFIGS}")
    assert sorted(p.name for p in shipped.iterdir() if p.name.endswith(".yaml")) == names
    for name in names:
        assert (shipped / name).read_bytes() == (CONFIGS / name).read_bytes(), name
    assert "MIT License" in (shipped / "LICENSE-MSST.txt").read_text()


def test_band_layouts_written_as_python_tuples_are_read_as_tuples():
    config = load_config(CONFIGS / "model_bs_roformer_ep_317_sdr_12.9755.yaml")
    bands = config["model"]["freqs_per_bands"]
    assert isinstance(bands, tuple) and sum(bands) == 1025  # every STFT bin of n_fft 2048


def test_a_config_that_would_build_a_python_object_is_refused(tmp_path):
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("model: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(yaml.YAMLError):
        load_config(hostile)
    assert not (tmp_path / "pwned").exists()


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="not an MSST model config"):
        load_config(listing)
