"""Remote keys and ensembles: names that mean the same on every machine, never the
owner's files.

A remote key may name a built-in ensemble, or an inline ensemble made only of
catalogue models; an ensemble file of the owner's (by name or by path), a built-in
name the owner's own file hides, and an inline ensemble with a checkpoint path are
the owner's alone, as with presets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daw_bridge.errors import DawBridgeError
from daw_bridge.separation import ensemble_library
from daw_bridge.server.access import confine

MINE = 'name = "{name}"\n[stems.vocals]\nmodels = "htdemucs"\n[stems.other]\nmodels = "htdemucs"\n'


@pytest.fixture
def owners_ensembles(tmp_path, monkeypatch) -> Path:
    """The owner's ensemble folder: one of their own, and one hiding a built-in's name."""
    folder = tmp_path / "ensembles"
    folder.mkdir()
    for name in ("mine", "best-vocals"):
        (folder / f"{name}.toml").write_text(MINE.format(name=name))
    monkeypatch.setenv(ensemble_library.USER_DIR_ENV, str(folder))
    return folder


def refusal(options: dict, owner: bool = False) -> str:
    """What confine names for a submit with ``options`` ('' when it names nothing)."""
    submit = {"type": "submit", "source": {"upload": "0" * 16}, "out_dir": "/tmp/stems"}
    try:
        confine({**submit, "options": options}, owner=owner, private=[])
    except DawBridgeError as refused:
        return refused.problem
    return ""


@pytest.mark.parametrize(
    "model",
    [
        "vocals-max",
        "fast",
        "vocals=max_fft:mel_roformer_vocals_kj+bs_roformer_vocals,other=htdemucs_ft",
        "vocals=dsp,drums=htdemucs,bass=htdemucs,other=htdemucs",
    ],
)
def test_a_remote_key_may_name_built_in_and_catalogue_only_ensembles(owners_ensembles, model):
    for option in ("model", "drum_kit"):
        assert "the model" not in refusal({option: model})


@pytest.mark.parametrize(
    "model",
    [
        "mine",  # the owner's own file, by name
        "best-vocals",  # a built-in's name the owner's file hides here
        "{folder}/mine.toml",  # a file by path
        "vocals=htdemucs,other={folder}/model.th",  # a checkpoint inside an inline one
        "vocals=mine,other=htdemucs",  # the owner's ensemble inside an inline one
        "vocals=",  # not an ensemble at all
    ],
)
def test_a_remote_key_may_not_name_the_owners_ensemble_files(owners_ensembles, model):
    model = model.format(folder=owners_ensembles)
    assert f"the model {model!r} (not a model name)" in refusal({"model": model})
    assert f"the model {model!r}" not in refusal({"model": model}, owner=True)


def test_only_built_ins_no_file_of_the_owners_hides_count_as_shared(owners_ensembles):
    names = ensemble_library.ensemble_names()
    assert {"mine", "best-vocals", "vocals-max", "fast"} <= set(names)
    assert ensemble_library.builtin_names() >= {"vocals-max", "fast"}
    assert not {"mine", "best-vocals"} & ensemble_library.builtin_names()
