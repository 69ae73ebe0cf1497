"""Our MelBandRoformer is MSST's Mel-Band RoFormer: every public config's checkpoint layout
loads with ``strict=True``, its mel bands are MSST's, and on the same weights both give
the same audio.

The oracle is MSST itself (pip ``msst==0.1.0``), never imported by daw_bridge.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from daw_bridge.models.msst.mel_band_roformer import MelBandRoformer
from tests.models.msst.conftest import public_config, reference_model

MODEL_TYPE = "mel_band_roformer"
PUBLIC_CONFIGS = [
    "model_mel_band_roformer_ep_3005_sdr_11.4360.yaml",  # viperx vocals
    "config_vocals_mel_band_roformer_kj.yaml",  # Kimberley Jensen vocals
]
# Largest (max |ours - MSST|) / max |MSST| accepted: float32 with different but
# equivalent operation orders (e.g. attention kernels) stays far below this.
RELATIVE_TOLERANCE = 1e-5


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def shrunk(name: str, **options: Any) -> dict[str, Any]:
    """A public config with small widths and depths in its ``model:`` section, everything
    else (mel bands, sample rate, STFT, stereo, stems, estimator depth) as published,
    then ``options``."""
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
    ours = MelBandRoformer(**model).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)

    channels = 2 if model["stereo"] else 1
    sample_rate = model["sample_rate"]
    hop = model["stft_hop_length"]
    # Not a whole number of STFT hops: MSST returns whole hops unless told to match.
    samples = int(sample_rate * seconds) + 123
    torch.manual_seed(1)
    mix = 0.3 * torch.randn(batch, channels, samples)
    with torch.no_grad():
        expected = reference(mix)
        actual = ours(mix)

    length = samples if model.get("match_input_audio_length") else samples // hop * hop
    stems = model["num_stems"]
    # MSST drops the stem axis of a one-stem model.
    wanted_shape = (batch, channels, length) if stems == 1 else (batch, stems, channels, length)
    assert actual.shape == expected.shape == wanted_shape
    error = (actual - expected).abs().max() / expected.abs().max()
    assert error <= RELATIVE_TOLERANCE, f"relative error {error:.3g}"


@pytest.mark.parametrize("name", PUBLIC_CONFIGS)
def test_full_size_state_dict_matches_msst_names_and_shapes(name: str):
    config = public_config(name)
    # Shapes only: the meta device builds the 230-250M-parameter models instantly.
    with torch.device("meta"):
        reference = reference_model(MODEL_TYPE, config)
        ours = MelBandRoformer(**config["model"])

    assert shapes(ours) == shapes(reference)
    ours.load_state_dict(reference.state_dict(), strict=True)


@pytest.mark.parametrize("name", PUBLIC_CONFIGS)
def test_mel_bands_are_msst_bands(name: str):
    """The band layout does not depend on the widths, so a shrunk model has the
    published one: which (bin, channel) rows each band reads and how often each is read."""
    config = shrunk(name, depth=1)
    reference = reference_model(MODEL_TYPE, config)
    ours = MelBandRoformer(**config["model"])

    assert torch.equal(ours.band_rows, reference.freq_indices)
    channels = 2 if config["model"]["stereo"] else 1
    reads = reference.num_bands_per_freq.repeat_interleave(channels)
    assert torch.equal(ours.bands_per_row.squeeze(1), reads.float())
    assert ours.band_split.dim_inputs == reference.band_split.dim_inputs


def test_weights_load_for_real_and_rotary_frequencies_match():
    """On real tensors every value arrives, and our own rotary frequencies (stored in
    checkpoints) are MSST's before any loading. A shrunk model with the published head
    width: the full-size ones take seconds to build (their layout is checked above)."""
    config = shrunk("config_vocals_mel_band_roformer_kj.yaml", dim_head=64, depth=1)
    reference = reference_model(MODEL_TYPE, config)
    ours = MelBandRoformer(**config["model"])

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
            dict(match_input_audio_length=True, mask_estimator_depth=1, stft_hop_length=512),
            id="match-length-1-hidden-estimator-hop-512",
        ),
        pytest.param(
            dict(sample_rate=32000, num_bands=40, time_transformer_depth=2),
            id="32kHz-40-bands-2-layer-time",
        ),
    ],
)
def test_forward_matches_msst_with_other_options(options: dict[str, Any]):
    config = shrunk("config_vocals_mel_band_roformer_kj.yaml", **options)
    assert_same_audio_as_msst(config, batch=2)


def test_loading_is_strict_about_missing_and_unexpected_keys():
    model = shrunk("config_vocals_mel_band_roformer_kj.yaml", depth=1)["model"]
    weights = MelBandRoformer(**model).state_dict()

    missing = dict(weights)
    del missing["layers.0.0.norm.gamma"]
    with pytest.raises(RuntimeError, match="Missing key"):
        MelBandRoformer(**model).load_state_dict(missing, strict=True)

    unexpected = dict(weights)
    unexpected["final_norm.gamma"] = torch.ones(32)  # BS-RoFormer has one; this model not
    with pytest.raises(RuntimeError, match="Unexpected key"):
        MelBandRoformer(**model).load_state_dict(unexpected, strict=True)


def test_mono_may_omit_the_channel_axis():
    model = shrunk("config_vocals_mel_band_roformer_kj.yaml", stereo=False, depth=1)["model"]
    ours = MelBandRoformer(**model).eval()
    with torch.no_grad():
        assert ours(torch.randn(1, 4410)).shape == (1, 1, 4410)


def test_wrong_channel_count_is_refused():
    ours = MelBandRoformer(**shrunk("config_vocals_mel_band_roformer_kj.yaml", depth=1)["model"])
    with pytest.raises(ValueError, match="stereo"):
        ours(torch.randn(1, 1, 4410))


def test_options_we_lack_are_refused_by_name():
    config = shrunk("config_vocals_mel_band_roformer_kj.yaml", use_pope=True)
    with pytest.raises(NotImplementedError, match="use_pope"):
        MelBandRoformer(**config["model"])
