"""Our MDX23C (TFC-TDF v3) against MSST's (the reference, never imported by the package).

Specification: for every public MDX23C config, our parameters carry MSST's names
and shapes, so MSST checkpoints load with ``strict=True``; on the same weights our
forward pass equals MSST's; a state dict with a key too many or too few is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from daw_bridge.models.msst.mdx23c import MDX23C
from tests.models.msst.conftest import public_config, reference_model

CONFIGS = ["config_vocals_mdx23c.yaml", "config_musdb18_mdx23c.yaml"]
TOLERANCE = 1e-5
# The public STFT (n_fft 8192, hop 1024, dim_f 4096) is kept; 31 hops (0.72 s at
# 44.1 kHz) give 32 frames, the fewest that five 2x down-scalings accept.
HOPS = 31


def shrunk_config(name: str, **model_changes: Any) -> dict[str, Any]:
    """The public config with 8 channels growing by 8; scales, blocks and STFT kept."""
    config = public_config(name)
    config["model"].update(num_channels=8, growth=8, **model_changes)
    return config


def twin_models(config: dict[str, Any], seed: int = 0) -> tuple[torch.nn.Module, MDX23C]:
    """MSST's model with seeded weights (norm affines perturbed) and ours holding them."""
    torch.manual_seed(seed)
    reference = reference_model("mdx23c", config)
    with torch.no_grad():
        for key, tensor in reference.state_dict().items():
            if tensor.ndim == 1 and tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn_like(tensor))
                if key.endswith("running_var"):
                    tensor.abs_()
    ours = MDX23C(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def relative_error(reference: torch.Tensor, ours: torch.Tensor) -> float:
    return ((reference - ours).abs().max() / reference.abs().max()).item()


def forward_both(config: dict[str, Any], batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    reference, ours = twin_models(config)
    torch.manual_seed(1)
    audio = torch.randn(batch, 2, HOPS * config["audio"]["hop_length"])
    with torch.no_grad():
        return reference(audio), ours(audio)


@pytest.mark.parametrize("name", CONFIGS)
def test_full_size_parameters_have_msst_names_and_shapes(name: str) -> None:
    config = public_config(name)
    # Full size is ~600 MB of float32; shapes and names need no storage.
    with torch.device("meta"):
        reference = reference_model("mdx23c", config)
        ours = MDX23C(config)
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    actual = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    assert actual == expected
    ours.load_state_dict(reference.state_dict(), strict=True)


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_equals_msst_on_the_same_weights(name: str) -> None:
    config = shrunk_config(name)
    expected, actual = forward_both(config, batch=2)
    stems = len(config["training"]["instruments"])
    assert actual.shape == expected.shape == (2, stems, 2, HOPS * 1024)
    assert relative_error(expected, actual) <= TOLERANCE


def test_target_instrument_gives_one_stem_like_msst() -> None:
    config = shrunk_config(CONFIGS[1])
    config["training"]["target_instrument"] = "vocals"
    expected, actual = forward_both(config)
    assert actual.shape == expected.shape == (1, 1, 2, HOPS * 1024)
    assert relative_error(expected, actual) <= TOLERANCE


# No public config uses these; MSST supports them and so do we.
@pytest.mark.parametrize(
    ("norm", "act"), [("BatchNorm", "relu"), ("GroupNorm4", "elu1.0"), ("none", "gelu")]
)
def test_other_msst_norms_and_activations_equal_msst(norm: str, act: str) -> None:
    config = shrunk_config(CONFIGS[0], norm=norm, act=act)
    expected, actual = forward_both(config)
    assert relative_error(expected, actual) <= TOLERANCE


def test_strict_loading_refuses_a_missing_key() -> None:
    config = shrunk_config(CONFIGS[0])
    state = MDX23C(config).state_dict()
    del state["bottleneck_block.blocks.0.tdf.2.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        MDX23C(config).load_state_dict(state, strict=True)


def test_strict_loading_refuses_an_unexpected_key() -> None:
    config = shrunk_config(CONFIGS[0])
    state = MDX23C(config).state_dict()
    state["final_conv.3.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        MDX23C(config).load_state_dict(state, strict=True)


def test_mono_is_not_implemented() -> None:
    config = shrunk_config(CONFIGS[0])
    config["audio"]["num_channels"] = 1
    with pytest.raises(NotImplementedError, match="num_channels"):
        MDX23C(config)


def test_audio_that_does_not_fill_the_scales_is_refused() -> None:
    model = MDX23C(shrunk_config(CONFIGS[0])).eval()
    with pytest.raises(ValueError, match="frame count"):
        model(torch.zeros(1, 2, 30 * 1024))
