"""Our SCNet against MSST's (the reference, never imported by the package).

Specification: for every public SCNet config, our parameters carry MSST's names
and shapes, so MSST checkpoints load with ``strict=True``; on the same weights our
forward pass equals MSST's; a state dict with a key too many or too few is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from daw_bridge.models.msst.scnet import SCNet
from tests.models.msst.conftest import public_config, reference_model

CONFIGS = ["config_musdb18_scnet.yaml", "config_musdb18_scnet_large.yaml"]
# Small channel widths per config, so a forward pass takes a second or two on CPU.
SHRUNK_DIMS = {
    "config_musdb18_scnet.yaml": [4, 8, 16, 32],
    "config_musdb18_scnet_large.yaml": [4, 12, 24, 48],
}
TOLERANCE = 1e-5
# MSST calls torch.stft without a window (rectangular); torch warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:A window was not provided")


def shrunk_config(name: str) -> dict[str, Any]:
    """The public config with narrow channels; STFT, bands, depths and layer counts kept."""
    config = public_config(name)
    config["model"]["dims"] = SHRUNK_DIMS[name]
    return config


def twin_models(config: dict[str, Any], seed: int = 0) -> tuple[torch.nn.Module, SCNet]:
    """MSST's model with seeded weights and ours holding the same weights.

    PyTorch's default initialisation keeps the network well conditioned (large random
    weights make even MSST's output swing by 1e-4 for a 1e-7 input change); biases and
    norm affines are perturbed so every parameter matters.
    """
    torch.manual_seed(seed)
    reference = reference_model("scnet", config)
    with torch.no_grad():
        for tensor in reference.state_dict().values():
            if tensor.ndim == 1:
                tensor.add_(0.1 * torch.randn_like(tensor))
    ours = SCNet(**config["model"]).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def relative_error(reference: torch.Tensor, ours: torch.Tensor) -> float:
    return ((reference - ours).abs().max() / reference.abs().max()).item()


@pytest.mark.parametrize("name", CONFIGS)
def test_full_size_parameters_have_msst_names_and_shapes(name: str) -> None:
    config = public_config(name)
    reference = reference_model("scnet", config)
    ours = SCNet(**config["model"])
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    actual = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    assert actual == expected
    ours.load_state_dict(reference.state_dict(), strict=True)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key


# 22050 samples need an extra hop of padding (even hop count); 22528 = 22 hops do not.
@pytest.mark.parametrize("length", [22050, 22528])
@pytest.mark.parametrize("name", CONFIGS)
def test_forward_equals_msst_on_the_same_weights(name: str, length: int) -> None:
    config = shrunk_config(name)
    reference, ours = twin_models(config)
    batch = 2 if length == 22050 else 1
    torch.manual_seed(1)
    audio = torch.randn(batch, config["model"]["audio_channels"], length)
    with torch.no_grad():
        expected = reference(audio)
        actual = ours(audio)
    sources = len(config["model"]["sources"])
    assert actual.shape == expected.shape == (batch, sources, 2, length)
    assert relative_error(expected, actual) <= TOLERANCE


def test_strict_loading_refuses_a_missing_key() -> None:
    config = shrunk_config(CONFIGS[0])
    state = SCNet(**config["model"]).state_dict()
    del state["separation_net.dp_modules.0.norm_layers.0.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        SCNet(**config["model"]).load_state_dict(state, strict=True)


def test_strict_loading_refuses_an_unexpected_key() -> None:
    config = shrunk_config(CONFIGS[0])
    state = SCNet(**config["model"]).state_dict()
    state["encoder.0.SDlayer.convs.3.weight"] = torch.zeros(8, 4, 3, 1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        SCNet(**config["model"]).load_state_dict(state, strict=True)


def test_settings_msst_cannot_run_are_refused() -> None:
    model = shrunk_config(CONFIGS[0])["model"]
    with pytest.raises(ValueError, match="num_dplayer"):
        SCNet(**{**model, "num_dplayer": 5})
    with pytest.raises(ValueError, match="dims"):
        SCNet(**{**model, "dims": [6, 8, 16, 32]})
    with pytest.raises(ValueError, match="band_SR"):
        SCNet(**{**model, "band_SR": [0.5, 0.5]})


def test_negative_conv_depths_are_not_implemented() -> None:
    model = shrunk_config(CONFIGS[0])["model"]
    with pytest.raises(NotImplementedError, match="conv_depths"):
        SCNet(**{**model, "conv_depths": [3, -2, 1]})
