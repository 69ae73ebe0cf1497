"""MSST's drum-kit model (``config_drumsep.yaml``: an HDemucs, MSST model type ``htdemucs``)
loads from a Demucs package as demucs saves it and separates exactly as MSST's own inference
does, with MSST's "demucs" chunking (no padding, no fades, plain averaging)."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from daw_bridge.models.loader import load_separator
from daw_bridge.models.msst.catalog import MSST_MODELS
from daw_bridge.models.msst.config import load_config
from daw_bridge.models.msst.demix import Chunking, demix
from daw_bridge.models.msst.separator import (
    MsstSeparator,
    chunking_of,
    load_msst,
    model_type_of,
    read_state_dict,
)
from tests.conftest import watch_istft
from tests.models.msst.conftest import reference_config
from tests.models.msst.test_demix import PositionSensitive

inference = pytest.importorskip(
    "msst._inference",
    reason="the MSST reference: pip install --no-deps msst==0.1.0 (see README, Tests)",
)
model_utils = pytest.importorskip("msst.utils.model_utils")
pytestmark = pytest.mark.filterwarnings("ignore:A window was not provided")
TOLERANCE = 1e-4
SHIPPED = MSST_MODELS["drumsep"].shipped_config()


def _msst_demucs_models() -> Any:
    """MSST's ``msst.models.demucs4ht`` (its ``get_model``). It imports openunmix's ``wiener``
    for its own HTDemucs copy only; where openunmix is not installed, a stand-in that refuses
    to run takes its place (HDemucs, the network tested here, uses demucs's own)."""
    if "openunmix" not in sys.modules and importlib.util.find_spec("openunmix") is None:

        def wiener(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("openunmix is not installed")

        package, filtering = types.ModuleType("openunmix"), types.ModuleType("openunmix.filtering")
        filtering.wiener = wiener  # type: ignore[attr-defined]
        package.filtering = filtering  # type: ignore[attr-defined]
        sys.modules.update({"openunmix": package, "openunmix.filtering": filtering})
    return importlib.import_module("msst.models.demucs4ht")


def shrunk(batch_size: int) -> dict[str, Any]:
    """The shipped drumsep config, same structure (depth 6, nfft 4096, LSTMs, attention and
    group norms from layer 4), small sizes: 4 channels instead of 48, 0.5 s chunks instead of
    40 s (12 a second at num_overlap 4)."""
    config = copy.deepcopy(load_config(SHIPPED))
    config["hdemucs"].update(channels=4)
    config["training"]["segment"] = 0.5
    config["inference"]["batch_size"] = batch_size
    return config


def demucs_package(config: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """MSST's model for ``config`` with seeded weights (1-d tensors perturbed so biases,
    norms and layer scales all count), saved as demucs's ``serialize_model`` packages it
    (half-precision state, its class and arguments beside it): the form of
    ``model_drumsep.th``. Also the config as a YAML file."""
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = _msst_demucs_models().get_model(OmegaConf.create(config))
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.ndim == 1 and tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn_like(tensor))
    training = OmegaConf.create({"dset": {"segment": 10}, "epochs": 1})
    checkpoint, config_path = folder / "model_drumsep.th", folder / "config_drumsep.yaml"
    torch.save(serialize_model(model, training, half=True), checkpoint)
    with open(config_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    return checkpoint, config_path


def msst_separates(checkpoint: Path, config_path: Path, mix: np.ndarray) -> dict[str, Any]:
    """MSST's inference end to end: its loader (config, checkpoint) and ``separate_audio``."""
    _msst_demucs_models()
    args = argparse.Namespace(
        config_path=str(config_path),
        start_check_point=str(checkpoint),
        model_type="htdemucs",
        force_cpu=True,
        device_ids=[0],
        lora_checkpoint_peft=None,
        lora_checkpoint_loralib=None,
        disable_detailed_pbar=True,
        bigshifts=1,
        use_tta=False,
        extract_instrumental=False,
    )
    model, config, device = inference.load_separator(args)
    return inference.separate_audio(model, args, config, device, mix)


@pytest.fixture
def one_thread():
    """HDemucs's many small convolutions run several times faster on one thread than on
    two threads of a busy machine; both sides of the comparison run alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def relative_error(reference: np.ndarray, ours: np.ndarray) -> float:
    return float(np.max(np.abs(reference - ours)) / np.max(np.abs(reference)))


@pytest.mark.parametrize("batch_size", [8, 1])  # as configured, and one chunk at a time
def test_drumsep_separates_exactly_as_msst_does(batch_size, tmp_path, one_thread):
    checkpoint, config_path = demucs_package(shrunk(batch_size), tmp_path)
    separator = load_msst(checkpoint, config_path)
    assert isinstance(separator, MsstSeparator)
    assert separator.model_type == "htdemucs"
    assert separator.sources == ("kick", "snare", "cymbals", "toms")
    assert separator.chunking == Chunking(22050, 4, batch_size, mode="demucs")
    frames = 3 * 44100 + 1234  # about 25 chunks, the last ones short
    mix = 0.3 * np.random.default_rng(7).standard_normal((2, frames)).astype(np.float32)

    ours = separator.separate(mix)
    theirs = msst_separates(checkpoint, config_path, mix)

    assert ours.shape == (4, 2, mix.shape[1])
    for index, stem in enumerate(separator.sources):
        assert relative_error(theirs[stem], ours[index]) < TOLERANCE, stem


def test_its_istft_is_given_a_real_signals_spectrum(tmp_path, monkeypatch, one_thread):
    """No imaginary part at 0 Hz, where a GPU's batched iSTFT could leak it into another
    chunk (tests/separation/test_spectrum.py); demucs's HDemucs has its ``_ispec`` wrapped."""
    separator = load_msst(*demucs_package(shrunk(8), tmp_path))
    largest = watch_istft(monkeypatch)
    separator.separate(0.3 * np.random.default_rng(7).standard_normal((2, 44100)).astype("f4"))
    assert largest and max(largest) == 0.0


def test_the_demucs_package_gives_its_state_as_saved(tmp_path):
    checkpoint, _ = demucs_package(shrunk(8), tmp_path)
    state = read_state_dict(checkpoint)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["klass"].__name__ == "HDemucs"  # a package, not a bare state dict
    assert state.keys() == saved["state"].keys()
    assert all(torch.equal(state[key], value) for key, value in saved["state"].items())


def test_the_shipped_config_is_msst_htdemucs_with_40_second_chunks():
    config = load_config(SHIPPED)
    assert model_type_of(config) == "htdemucs"
    assert chunking_of("htdemucs", config) == Chunking(1_764_000, 4, 8, mode="demucs")


def test_the_catalogue_name_finds_the_checkpoint_and_the_shipped_config(tmp_path, monkeypatch):
    (tmp_path / "model_drumsep.th").write_bytes(b"weights")
    calls: list[tuple[Any, ...]] = []

    def load(checkpoint, config, model_type=None, name=None, **options):
        calls.append((checkpoint, config, model_type, name))
        return "separator"

    monkeypatch.setattr("daw_bridge.models.msst.separator.load_msst", load)
    assert load_separator("drumsep", model_dir=tmp_path, download=False, device="cpu") == (
        "separator"
    )
    assert calls == [(tmp_path / "model_drumsep.th", SHIPPED, "htdemucs", "drumsep")]


# MSST's demix in its "demucs" mode against ours, bit for bit.


def msst_demucs_config(chunk: int, overlap: int, batch: int, instruments: list[str]):
    return reference_config(
        {
            "audio": {"chunk_size": 999, "num_channels": 2},  # not used in this mode
            "inference": {"num_overlap": overlap, "batch_size": batch},
            "training": {
                "instruments": instruments,
                "samplerate": 1000,
                "segment": chunk / 1000,
                "use_amp": True,
            },
        }
    )


@pytest.mark.parametrize(
    ("frames", "chunk", "overlap", "batch"),
    [
        (10_000, 1000, 4, 1),  # many chunks, one per batch
        (10_000, 1000, 4, 3),
        (10_000, 1000, 2, 8),
        (7_777, 1000, 4, 2),  # a short last chunk, over half a chunk: still zero-padded
        (7_300, 1000, 4, 8),  # a short last chunk under half
        (1_200, 1000, 4, 2),
        (600, 1000, 4, 1),  # shorter than one chunk
        (4_000, 1000, 1, 2),  # no overlap
        (5_000, 1500, 3, 2),
    ],
)
def test_demucs_mode_equals_msst_demix(frames, chunk, overlap, batch):
    instruments = ["kick", "snare", "cymbals", "toms"]
    mix = np.random.default_rng(frames).standard_normal((2, frames)).astype(np.float32)
    model = PositionSensitive(4)
    config = msst_demucs_config(chunk, overlap, batch, instruments)
    theirs = model_utils.demix(config, model, mix, "cpu", "htdemucs")
    theirs = np.stack([theirs[name] for name in instruments])
    ours = demix(model, mix, Chunking(chunk, overlap, batch, mode="demucs"), 4)
    assert ours.shape == theirs.shape == (4, 2, frames)
    np.testing.assert_array_equal(ours, theirs)


def test_demucs_mode_mono_in_gives_mono_out_as_msst():
    mix = np.random.default_rng(1).standard_normal((1, 5_000)).astype(np.float32)
    model = PositionSensitive(2)
    theirs = model_utils.demix(
        msst_demucs_config(1000, 4, 2, ["kick", "snare"]), model, mix, "cpu", "htdemucs"
    )
    ours = demix(model, mix, Chunking(1000, 4, 2, mode="demucs"), 2)
    assert ours.shape == (2, 1, 5_000)
    np.testing.assert_array_equal(ours, np.stack([theirs["kick"], theirs["snare"]]))


def test_an_unknown_chunking_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        Chunking(1000, 4, 1, mode="apollo")
