"""The opt-in OpenVINO path for MSST networks (``daw_bridge.models.msst.accel``).

Specification: each architecture's cut (STFT and complex arithmetic in torch,
the real-valued middle convertible) re-assembles the module's own ``forward``
exactly; the OpenVINO-compiled network stays within -40 dB of torch on the
same weights and input (measured: about -90 to -130 dB); it stands in for the
model in :class:`MsstSeparator` and its output matches torch's there too. The
configs are the public ones, shrunk as in the parity tests (same structure,
narrow widths) and run on short inputs, so conversion takes seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from daw_bridge.models.msst.accel import OpenVinoNetwork, split_network
from daw_bridge.models.msst.separator import build_model, model_type_of
from tests.models.msst.conftest import public_config

#: Relative error (dB) the OpenVINO output must stay under.
LIMIT_DB = -40.0
#: Public config -> (model section changes that shrink it, input samples). MDX23C needs a
#: frame count divisible by 2**num_scales: 31744 samples are 32 hops of 1024.
SHRUNK: dict[str, tuple[dict[str, Any], int]] = {
    "config_vocals_bs_roformer.yaml": (
        {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "mlp_expansion_factor": 2},
        22050,
    ),
    "config_vocals_mel_band_roformer_kj.yaml": (
        {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "mlp_expansion_factor": 2},
        22050,
    ),
    "config_musdb18_scnet.yaml": ({"dims": [4, 8, 16, 32]}, 22050),
    "config_vocals_mdx23c.yaml": ({"num_channels": 8, "growth": 8}, 31744),
}
# SCNet and MDX23C call torch.stft as MSST does; torch warns about details of that.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def shrunk_model(name: str, seed: int = 0) -> tuple[str, dict[str, Any], torch.nn.Module]:
    config = public_config(name)
    config["model"].update(SHRUNK[name][0])
    model_type = model_type_of(config)
    torch.manual_seed(seed)
    return model_type, config, build_model(model_type, config).eval()


def relative_db(ours: torch.Tensor, reference: torch.Tensor) -> float:
    error = float((ours - reference).norm() / reference.norm())
    return 20 * np.log10(error) if error > 0 else float("-inf")


def music_like(samples: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, 2, samples, generator=generator)


@pytest.mark.parametrize("name", SHRUNK)
def test_the_cut_reassembles_forward_exactly(name: str) -> None:
    _, _, model = shrunk_model(name)
    mix = music_like(SHRUNK[name][1])
    with torch.inference_mode():
        assert torch.equal(split_network(model).run(mix), model(mix))


def test_an_architecture_without_a_cut_is_refused_by_name() -> None:
    with pytest.raises(NotImplementedError, match="Linear"):
        split_network(torch.nn.Linear(2, 2))


# SCNet's path works too but is not used (not faster): its cut is checked above only.
@pytest.mark.parametrize("name", [name for name in SHRUNK if "scnet" not in name])
def test_openvino_matches_torch_on_the_same_weights(name: str) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
    _, _, model = shrunk_model(name)
    mix = music_like(SHRUNK[name][1], batch=2)
    with torch.inference_mode():
        reference = model(mix)
        ours = OpenVinoNetwork(model, threads=1)(mix)
    assert ours.shape == reference.shape
    assert relative_db(ours, reference) < LIMIT_DB


def test_the_openvino_backend_is_chosen_by_name_and_converts_once_per_model(
    tmp_path, monkeypatch, caplog
) -> None:
    """``--backend openvino`` gives MDX23C and the RoFormers their OpenVINO path, standing
    in for the model in the separator (demix's chunks, batches and fades unchanged); the
    converted model is kept on disk, so the next load (another process) skips the
    minutes of conversion; SCNet, not faster there, stays in torch and says so."""
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
    import yaml

    from daw_bridge.models.loader import load_separator

    monkeypatch.setenv("DAW_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    name = "config_vocals_mdx23c.yaml"
    _, config, model = shrunk_model(name)
    config["audio"]["chunk_size"] = SHRUNK[name][1]
    config["inference"].update(num_overlap=2, batch_size=2)
    torch.save(model.state_dict(), tmp_path / "vocals.ckpt")
    (tmp_path / "vocals.yaml").write_text(yaml.dump(config), encoding="utf-8")
    mix = music_like(3 * SHRUNK[name][1])[0].numpy()

    plain = load_separator(str(tmp_path / "vocals.ckpt"), device="cpu")
    fast = load_separator(str(tmp_path / "vocals.ckpt"), device="cpu", backend="openvino")
    assert not isinstance(plain.model, OpenVinoNetwork)
    assert isinstance(fast.model, OpenVinoNetwork)
    expected = plain.separate(mix)
    assert relative_db(torch.from_numpy(fast.separate(mix)), torch.from_numpy(expected)) < LIMIT_DB
    assert len(list((tmp_path / "cache" / "compiled").glob("msst-*.xml"))) == 1

    def no_conversion(*_args, **_kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(ov, "convert_model", no_conversion)
    again = load_separator(str(tmp_path / "vocals.ckpt"), device="cpu", backend="openvino")
    assert relative_db(torch.from_numpy(again.separate(mix)), torch.from_numpy(expected)) < (
        LIMIT_DB
    )

    _, scnet_config, scnet = shrunk_model("config_musdb18_scnet.yaml")
    torch.save(scnet.state_dict(), tmp_path / "scnet.ckpt")
    (tmp_path / "scnet.yaml").write_text(yaml.dump(scnet_config), encoding="utf-8")
    with caplog.at_level("WARNING"):
        kept = load_separator(str(tmp_path / "scnet.ckpt"), device="cpu", backend="openvino")
    assert not isinstance(kept.model, OpenVinoNetwork)
    assert "no OpenVINO path is kept for scnet" in caplog.text
