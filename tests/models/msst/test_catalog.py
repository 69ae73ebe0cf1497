"""Every named MSST model: a config that fits it, its stems, numbers with their ruler,
its licence as the author states it."""

from __future__ import annotations

import pytest

from daw_bridge.errors import ModelUnavailableError
from daw_bridge.models.loader import model_names
from daw_bridge.models.msst.catalog import (
    DRUMSEP,
    DRUMSEP_MDX,
    MSST_MODELS,
    MULTISONG,
    MUSDB,
    get_msst_model,
)
from daw_bridge.models.msst.config import load_config
from daw_bridge.models.msst.separator import model_type_of


@pytest.mark.parametrize("name", sorted(MSST_MODELS))
def test_each_entry_names_a_checkpoint_a_config_stems_a_ruler_and_a_licence(name):
    entry = MSST_MODELS[name]
    assert entry.checkpoint.url.startswith("https://")
    # MSST's Demucs-family checkpoints are Demucs packages (.th), the others .ckpt files.
    assert entry.checkpoint.url.endswith(".th" if entry.model_type == "htdemucs" else ".ckpt")
    assert entry.licence and entry.author
    assert all(score.ruler in (MUSDB, MULTISONG, DRUMSEP, DRUMSEP_MDX) for score in entry.scores)
    assert all(score.stem in (*entry.stems, "average") for score in entry.scores)
    if entry.checkpoint.sha256:
        assert len(entry.checkpoint.sha256) == 64
    shipped = entry.shipped_config()
    if shipped is None:  # a release asset, downloaded with the checkpoint
        assert entry.config_download().url.endswith(".yaml")
        return
    config = load_config(shipped)
    assert model_type_of(config) == entry.model_type
    instruments = list(config["training"]["instruments"])
    target = config["training"].get("target_instrument")
    if target:
        assert entry.stems == (target, *(s for s in instruments if s != target))
    else:
        assert entry.stems == tuple(instruments)
    # Demucs-family configs give the rate under training only.
    rate = config["audio"].get("sample_rate") or config["training"]["samplerate"]
    assert rate == entry.samplerate


def test_msst_models_are_names_the_model_option_takes():
    assert set(MSST_MODELS) <= set(model_names())


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelUnavailableError, match="bs_roformer_vocals"):
        get_msst_model("bs_roformer_vocal")


def test_files_on_the_hugging_face_hub_come_from_the_mirror_in_hf_endpoint(monkeypatch):
    """As for the Demucs weights: $HF_ENDPOINT names a mirror of the hub; files
    elsewhere (GitHub releases) keep their address."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8765/hub")
    kj = MSST_MODELS["mel_roformer_vocals_kj"].checkpoint_download()
    assert kj.url == "http://127.0.0.1:8765/hub/KimberleyJSN/melbandroformer/resolve/main/" + (
        "MelBandRoformer.ckpt"
    )
    assert kj.sha256 == MSST_MODELS["mel_roformer_vocals_kj"].checkpoint.sha256
    scnet = MSST_MODELS["scnet"]
    assert scnet.checkpoint_download() == scnet.checkpoint
    monkeypatch.delenv("HF_ENDPOINT")
    assert (
        MSST_MODELS["mel_roformer_vocals_kj"]
        .checkpoint_download()
        .url.startswith("https://huggingface.co/KimberleyJSN/")
    )


def test_the_six_piece_drum_model_names_its_pieces_and_its_config_is_downloaded():
    """Its config is published beside the checkpoint, not among MSST's configs (so it
    is not in ../shared/models/msst-configs and is not run here at full size)."""
    entry = MSST_MODELS["drumsep_mdx23c"]
    assert entry.stems == ("kick", "snare", "toms", "hh", "ride", "crash")
    assert entry.shipped_config() is None
    assert entry.config_download().url.rsplit("/", 1)[1] == (
        entry.checkpoint.filename.removesuffix(".ckpt") + ".yaml"
    )
    assert "non-commercial" in entry.licence
