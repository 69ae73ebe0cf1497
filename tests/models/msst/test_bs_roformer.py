"""Our BSRoformer is MSST's BS-RoFormer: every public config's checkpoint layout loads with
``strict=True``, and on the same weights both give the same audio.

The oracle is MSST itself (pip ``msst==0.1.0``), never imported by daw_bridge.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from daw_bridge.models.msst.bs_roformer import BSRoformer
from tests.models.msst.conftest import public_config, reference_model

MODEL_TYPE = "bs_roformer"
PUBLIC_CONFIGS = [
    "model_bs_roformer_ep_317_sdr_12.9755.yaml",  # viperx vocals
    "config_musdb18_bs_roformer.yaml",
    "config_vocals_bs_roformer.yaml",
]
# Largest (max |ours - MSST|) / max |MSST| accepted: float32 with different but
# equivalent operation orders (e.g. attention kernels) stays far below this.
RELATIVE_TOLERANCE = 1e-5


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def shrunk(name: str, **options: Any) -> dict[str, Any]:
    """A public config with small widths and depths in its ``model:`` section, everything
    else (band layout, STFT, stereo, stems, estimator depth) as published, then
    ``options``."""
    config = public_config(name)
    config["model"].update(dim=32, depth=2, heads=2, dim_head=16, mlp_expansion_factor=2)
    config["model"].update(options)
    return config


def reference_with_random_weights(config: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """MSST's model with random weights; its gains and biases (ones and zeros when
    initialised) and rotary frequencies are randomised too, so that using them matters."""
    torch.manual_seed(seed)
    reference = reference_model(MODEL_TYPE, config)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.endswith("rotary_embed.freqs"):
                parameter.mul_(torch.empty_like(parameter).uniform_(0.5, 1.5))
            elif parameter.ndim == 1:
                parameter.normal_(0.0, 0.5)
    return reference


def assert_same_audio_as_msst(config: dict[str, Any], batch: int = 1, seconds: float = 0.5):
    reference = reference_with_random_weights(config)
    model = config["model"]
    ours = BSRoformer(**model).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)

    channels = 2 if model["stereo"] else 1
    # Not a whole number of STFT hops: the output length must follow MSST there too.
    samples = int(44100 * seconds) + 123
    torch.manual_seed(1)
    mix = 0.3 * torch.randn(batch, channels, samples)
    with torch.no_grad():
        expected = reference(mix)
        actual = ours(mix)

    assert actual.shape == expected.shape == (batch, model["num_stems"], channels, samples)
    error = (actual - expected).abs().max() / expected.abs().max()
    assert error <= RELATIVE_TOLERANCE, f"relative error {error:.3g}"


@pytest.mark.parametrize("name", PUBLIC_CONFIGS)
def test_full_size_state_dict_matches_msst_names_and_shapes(name: str):
    config = public_config(name)
    # Shapes only: the meta device builds even the 160M-parameter model instantly.
    with torch.device("meta"):
        reference = reference_model(MODEL_TYPE, config)
        ours = BSRoformer(**config["model"])

    assert shapes(ours) == shapes(reference)
    ours.load_state_dict(reference.state_dict(), strict=True)


def test_full_size_weights_load_for_real_and_rotary_frequencies_match():
    """On real tensors (the smallest public config): every value arrives, and our own
    rotary frequencies (stored in checkpoints) are MSST's before any loading."""
    config = public_config("config_vocals_bs_roformer.yaml")
    reference = reference_model(MODEL_TYPE, config)
    ours = BSRoformer(**config["model"])

    own_freqs = {k: v for k, v in ours.state_dict().items() if k.endswith("rotary_embed.freqs")}
    assert own_freqs
    for key, value in own_freqs.items():
        assert torch.equal(value, reference.state_dict()[key]), key

    ours.load_state_dict(reference.state_dict(), strict=True)
    loaded = ours.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("name", PUBLIC_CONFIGS)
def test_forward_matches_msst_on_shrunk_public_config(name: str):
    assert_same_audio_as_msst(shrunk(name))


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(
            dict(linear_transformer_depth=1, skip_connection=True), id="linear-attn+skips"
        ),
        pytest.param(dict(flash_attn=False), id="msst-non-flash-attention"),
        pytest.param(dict(stereo=False, num_stems=2, zero_dc=False), id="mono-2-stems-dc"),
        pytest.param(
            dict(mask_estimator_depth=1, time_transformer_depth=2, stft_hop_length=441),
            id="1-layer-estimator-2-layer-time-hop-441",
        ),
    ],
)
def test_forward_matches_msst_with_other_options(options: dict[str, Any]):
    assert_same_audio_as_msst(shrunk("config_musdb18_bs_roformer.yaml", **options), batch=2)


def test_loading_is_strict_about_missing_and_unexpected_keys():
    model = shrunk("config_vocals_bs_roformer.yaml")["model"]
    weights = BSRoformer(**model).state_dict()

    missing = dict(weights)
    del missing["final_norm.gamma"]
    with pytest.raises(RuntimeError, match="Missing key"):
        BSRoformer(**model).load_state_dict(missing, strict=True)

    unexpected = dict(weights)
    unexpected["final_norm.beta"] = torch.zeros(32)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        BSRoformer(**model).load_state_dict(unexpected, strict=True)


def test_one_stem_output_keeps_the_stem_axis_and_mono_may_omit_channels():
    model = shrunk("config_vocals_bs_roformer.yaml", stereo=False, depth=1)["model"]
    ours = BSRoformer(**model).eval()
    with torch.no_grad():
        assert ours(torch.randn(1, 1, 4410)).shape == (1, 1, 1, 4410)
        assert ours(torch.randn(1, 4410)).shape == (1, 1, 1, 4410)


def test_wrong_channel_count_is_refused():
    ours = BSRoformer(**shrunk("config_vocals_bs_roformer.yaml", depth=1)["model"])
    with pytest.raises(ValueError, match="stereo"):
        ours(torch.randn(1, 1, 4410))


def test_options_we_lack_are_refused_by_name():
    with pytest.raises(NotImplementedError, match="use_pope"):
        BSRoformer(**shrunk("config_vocals_bs_roformer.yaml", use_pope=True)["model"])


def test_bands_must_cover_the_spectrum():
    with pytest.raises(ValueError, match="1025"):
        config = shrunk("config_vocals_bs_roformer.yaml", freqs_per_bands=(512, 512))
        BSRoformer(**config["model"])
