"""Every named MSST model: a config that fits it, its stems, numbers with their ruler,
its licence as the author states it."""

from __future__ import annotations

import pytest

from daw_bridge.errors import ModelUnavailableError
from daw_bridge.models.loader import model_names
from daw_bridge.models.msst.catalog import DRUMSEP, MSST_MODELS, MULTISONG, MUSDB, get_msst_model
from daw_bridge.models.msst.config import load_config
from daw_bridge.models.msst.separator import model_type_of


@pytest.mark.parametrize("name", sorted(MSST_MODELS))
def test_each_entry_names_a_checkpoint_a_config_stems_a_ruler_and_a_licence(name):
    entry = MSST_MODELS[name]
    assert entry.checkpoint.url.startswith("https://")
    # MSST's Demucs-family checkpoints are Demucs packages (.th), the others .ckpt files.
    assert entry.checkpoint.url.endswith(".th" if entry.model_type == "htdemucs" else ".ckpt")
    assert entry.licence and entry.author
    assert all(score.ruler in (MUSDB, MULTISONG, DRUMSEP) for score in entry.scores)
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
