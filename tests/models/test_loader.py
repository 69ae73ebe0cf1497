"""Model names and checkpoint files become ready separators; bad ones fail clearly."""

from __future__ import annotations

import pickle

import pytest
import torch

from daw_bridge.errors import ModelUnavailableError
from daw_bridge.models import catalog
from daw_bridge.models.catalog import ModelFile, ModelSpec
from daw_bridge.models.loader import load_separator, model_names
from tests.conftest import save_checkpoint, tiny_htdemucs


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("DAW_BRIDGE_MODEL_DIR", raising=False)
    monkeypatch.setenv("DAW_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_local_checkpoint_file(tiny_checkpoint):
    separator = load_separator(str(tiny_checkpoint), device="cpu")
    assert separator.name == tiny_checkpoint.stem
    assert separator.sources == ("drums", "bass", "other", "vocals")
    assert separator.samplerate == 44100


def test_named_model_from_model_dir_as_a_weighted_bag(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    files = [save_checkpoint(tiny_htdemucs(seed=s), folder, f"aaaa000{s}") for s in (1, 2)]
    spec = ModelSpec(
        "tinybag",
        tuple(ModelFile(f.name) for f in files),
        weights=((1, 1, 0, 0), (0, 0, 1, 1)),
    )
    monkeypatch.setitem(catalog.MODELS, "tinybag", spec)
    separator = load_separator("tinybag", model_dir=folder, device="cpu", download=False)
    assert separator.name == "tinybag"
    assert len(separator.engine.models) == 2
    assert separator.engine.weights == [[1, 1, 0, 0], [0, 0, 1, 1]]


def test_missing_weights_name_the_fix(tmp_path):
    with pytest.raises(ModelUnavailableError) as error:
        load_separator("htdemucs", download=False)
    assert "955717e8-8726e21a.th" in str(error.value)
    assert "--model dsp" in error.value.fix and "--model-dir" in error.value.fix


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(ModelUnavailableError, match="not found"):
        load_separator(str(tmp_path / "mine.th"))


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.th"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(ModelUnavailableError, match="not a Demucs checkpoint"):
        load_separator(str(path))


def test_checkpoint_without_a_model(tmp_path):
    path = tmp_path / "state.th"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelUnavailableError, match="no 'klass'"):
        load_separator(str(path))


class _Exploit:
    """Unpickling this would create a file: what a booby-trapped checkpoint could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.th"
    with open(path, "wb") as handle:
        pickle.dump({"klass": _Exploit(str(marker)), "kwargs": {}, "state": {}}, handle, protocol=2)
    with pytest.raises(ModelUnavailableError):
        load_separator(str(path))
    assert not marker.exists()


def test_names_include_dsp_and_the_catalog():
    assert model_names() == ["htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "dsp"]
