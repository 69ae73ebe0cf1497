"""Named ensembles: TOML files that say which model gives each stem, found like presets.

Read as a specification: a name or a file turns into the inline spec the ensemble
separator runs; the user's folder adds names and hides built-ins; every mistake is
refused before any model loads, naming the key, the problem and the fix; and a
file ensemble splits a song into stems that sum to it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from daw_bridge.models import loader
from daw_bridge.models.loader import load_separator, model_names
from daw_bridge.models.msst.catalog import MSST_MODELS
from daw_bridge.models.stems import (
    DSP_MODEL,
    DSP_STEMS,
    REST_STEM,
    all_model_stems,
    catalogue_stems,
)
from daw_bridge.separation import ensemble_library as library
from daw_bridge.separation.ensemble import RULES, parse_ensemble
from daw_bridge.separation.ensemble_library import (
    EnsembleError,
    expand,
    load_ensemble,
    parse_ensemble_file,
)
from daw_bridge.separation.pipeline import split_file
from tests.conftest import noise, write_wav

ROOT = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(autouse=True)
def user_folder(tmp_path, monkeypatch) -> Path:
    """The user's ensemble folder: empty and private to each test, never the real one."""
    folder = tmp_path / "ensembles"
    folder.mkdir()
    monkeypatch.setenv(library.USER_DIR_ENV, str(folder))
    return folder


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- built-ins ---------------------------------------------------------------------------


def test_a_built_in_resolves_to_the_inline_spec_the_separator_runs():
    ensemble = load_ensemble("vocals-max")
    assert ensemble.spec == (
        "vocals=max_fft:mel_roformer_vocals_kj+bs_roformer_vocals,"
        "drums=htdemucs_ft,bass=htdemucs_ft,other=htdemucs_ft"
    )
    assert parse_ensemble(ensemble.spec)["vocals"] == (
        "max_fft",
        ["mel_roformer_vocals_kj", "bs_roformer_vocals"],
    )
    assert ensemble.models == ("mel_roformer_vocals_kj", "bs_roformer_vocals", "htdemucs_ft")
    assert expand("vocals-max") == ensemble.spec


def test_best_vocals_takes_vocals_from_the_roformer_and_the_rest_from_htdemucs_ft():
    assert parse_ensemble(load_ensemble("best-vocals").spec) == {
        "vocals": ("avg_wave", ["mel_roformer_vocals_kj"]),
        "drums": ("avg_wave", ["htdemucs_ft"]),
        "bass": ("avg_wave", ["htdemucs_ft"]),
        "other": ("avg_wave", ["htdemucs_ft"]),
    }


def test_every_shipped_built_in_validates_against_the_catalogue():
    """A renamed or removed model, or a stem a model no longer gives, breaks this test."""
    shipped = sorted((ROOT / "ensembles").glob("*.toml"))
    assert {path.stem for path in shipped} >= {
        "best-vocals",
        "vocals-max",
        "vocals-instrumental",
        "fast",
        "six-stems",
    }
    stems = catalogue_stems()
    for path in shipped:
        ensemble = load_ensemble(path.stem)
        assert ensemble.name == path.stem and ensemble.description, path
        assert "other" in ensemble.stems, f"{path}: the residual needs an 'other' stem"
        for stem, (rule, names) in parse_ensemble(ensemble.spec).items():
            assert rule in RULES
            for name in names:
                assert name in model_names() and stem in stems[name], (path, stem, name)


def test_other_model_strings_are_not_ensemble_names():
    for model in ("htdemucs", "dsp", "vocals=dsp,other=dsp", "/models/x.th", "nope"):
        assert not library.is_named_ensemble(model)
        assert expand(model) == model


# -- the user's folder -------------------------------------------------------------------

MINE = """
# my own: vocals from two models, averaged
name = "mine"
description = "two vocal models averaged"

[stems.vocals]
models = ["mel_roformer_vocals_kj", "mdx23c_vocals"]

[stems.other]
models = "mdx23c_vocals"   # one model may be written without brackets
"""


def test_a_user_file_adds_a_name_and_a_user_copy_hides_the_built_in(user_folder):
    write(user_folder, "mine", MINE)
    write(user_folder, "best-vocals", MINE.replace('"mine"', '"best-vocals"'))
    origins = {entry.name: entry.origin for entry in library.available()}
    assert origins["mine"] == origins["best-vocals"] == "user"
    assert origins["vocals-max"] == "built-in"
    assert load_ensemble("mine").spec == (
        "vocals=avg_wave:mel_roformer_vocals_kj+mdx23c_vocals,other=mdx23c_vocals"
    )
    assert load_ensemble("best-vocals").description == "two vocal models averaged"
    assert "best-vocals" not in library.builtin_names()  # it means something else here
    assert {"mine", "best-vocals", "fast"} <= set(library.ensemble_names())


def test_a_file_may_also_be_given_by_its_path(tmp_path):
    path = write(tmp_path, "anything", MINE)  # a path is not held to its file name
    assert load_ensemble(str(path)).name == "mine"
    assert library.is_named_ensemble(str(path))


def test_a_broken_user_file_is_listed_with_its_problem_not_raised(user_folder):
    write(user_folder, "broken", 'name = "broken"\n[stems.vocals]\nmodels = ["nope"]\n')
    listed = {entry.name: (found, problem) for entry, found, problem in library.describe_all()}
    assert listed["broken"][0] is None and "'nope' is not a model name" in listed["broken"][1]
    assert listed["fast"][0] is not None


def test_daw_bridge_models_lists_the_ensembles_in_their_own_section(user_folder, capsys):
    from daw_bridge.cli import main

    write(user_folder, "mine", MINE)
    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    section = printed[printed.index("Ensembles") :]
    assert str(user_folder) in section.splitlines()[0]
    for name in ("best-vocals", "vocals-max", "fast", "mine"):
        assert f"\n{name} " in section
    assert "runs: vocals=max_fft:mel_roformer_vocals_kj+bs_roformer_vocals" in section
    assert f"user: {user_folder / 'mine.toml'}" in section


# -- every mistake named, with its fix ----------------------------------------------------

VALID_TAIL = '\n[stems.other]\nmodels = ["htdemucs_ft"]\n'


def bad(body: str) -> str:
    return f'name = "bad"\n{body}'


@pytest.mark.parametrize(
    ("text", "problem", "fix"),
    [
        (
            bad('stem = "x"\n[stems.vocals]\nmodels = ["htdemucs_ft"]' + VALID_TAIL),
            "stem: is not an ensemble setting. Did you mean 'stems'?",
            "Allowed at the top: name, description, stems",
        ),
        (
            "[stems.vocals]\nmodels = ['htdemucs']\n" + VALID_TAIL,
            "name: is missing.",
            'name = "my-vocals"',
        ),
        (bad(""), "stems: is missing or empty.", "Add a [stems.<stem>] section"),
        (
            bad('[stems]\nvocals = "htdemucs_ft"\n'),
            "stems.vocals: must be a section.",
            'Write it as [stems.vocals] followed by models = ["..."]',
        ),
        (
            bad("[stems.vocals]\nmodels = []\n" + VALID_TAIL),
            "stems.vocals.models: is missing or empty.",
            'e.g. models = ["htdemucs_ft"]',
        ),
        (
            bad('[stems.vocals]\nmodels = ["htdemucs_ft"]\nrules = "avg_fft"\n' + VALID_TAIL),
            "stems.vocals.rules: is not a stem setting. Did you mean 'rule'?",
            "Allowed in [stems.vocals]: models, rule",
        ),
        (
            bad('[stems.vocals]\nmodels = ["htdemucs_fx"]\n' + VALID_TAIL),
            "'htdemucs_fx' is not a model name. Did you mean 'htdemucs_ft'?",
            "Use models from the catalogue: htdemucs, htdemucs_ft",
        ),
        (
            bad('[stems.vocals]\nmodels = ["htdemucs", "scnet"]\nrule = "loudest"\n' + VALID_TAIL),
            "stems.vocals.rule: 'loudest' is not an ensemble rule.",
            "Use one of: avg_wave, median_wave, min_wave, max_wave, avg_fft",
        ),
        (
            bad('[stems.drums]\nmodels = ["bs_roformer_vocals"]\n' + VALID_TAIL),
            "stems.drums: model 'bs_roformer_vocals' gives no 'drums' stem "
            "(its stems: vocals, other).",
            "Take drums from a model that gives it (e.g. htdemucs",
        ),
        (
            bad('[stems.guitar]\nmodels = ["htdemucs_ft"]\n' + VALID_TAIL),
            "model 'htdemucs_ft' gives no 'guitar' stem",
            "e.g. htdemucs_6s",
        ),
        (
            bad('[stems.vocals]\nmodels = ["scnet", "scnet"]\n' + VALID_TAIL),
            "stems.vocals.models: names a model twice.",
            "Name each model once",
        ),
        (
            'name = "htdemucs"\n[stems.vocals]\nmodels = ["htdemucs_ft"]\n' + VALID_TAIL,
            "name: 'htdemucs' is already a model's name.",
            "Choose another name",
        ),
        (
            bad('[stems.vocals]\nmodels = ["htdemucs_ft"]\n[stems.drums]\nmodels = ["scnet"]\n'),
            "stems: has no [stems.other], so whatever the chosen stems miss",
            "Add [stems.other] with the model it comes from",
        ),
        (
            bad("[stems.vocals\n"),
            "is not valid TOML",
            "Fix the syntax at that line",
        ),
    ],
    ids=[
        "unknown top key",
        "no name",
        "no stems",
        "stem not a section",
        "empty models",
        "unknown stem key",
        "unknown model",
        "unknown rule",
        "model lacks the stem",
        "stem only another model gives",
        "model twice",
        "name of a model",
        "nowhere for the residual",
        "not TOML",
    ],
)
def test_each_mistake_is_refused_naming_the_key_the_problem_and_the_fix(
    tmp_path, text, problem, fix
):
    path = write(tmp_path, "bad", text)
    with pytest.raises(EnsembleError) as refused:
        load_ensemble(str(path))
    assert str(path) in refused.value.problem
    assert problem in refused.value.problem
    assert fix in refused.value.fix


def test_all_problems_of_a_file_are_listed_at_once(tmp_path):
    text = bad('[stems.vocals]\nmodels = ["nope"]\nrule = "loud"\n' + VALID_TAIL)
    with pytest.raises(EnsembleError, match="has 2 problems") as refused:
        load_ensemble(str(write(tmp_path, "bad", text)))
    assert "'nope' is not a model name" in refused.value.problem
    assert "'loud' is not an ensemble rule" in refused.value.problem


def test_models_of_different_sample_rates_are_refused(monkeypatch):
    slow = dataclasses.replace(MSST_MODELS["scnet"], name="scnet_48k", samplerate=48000)
    monkeypatch.setitem(MSST_MODELS, "scnet_48k", slow)
    data = tomllib.loads(bad('[stems.vocals]\nmodels = ["scnet_48k"]\n' + VALID_TAIL))
    with pytest.raises(EnsembleError, match="different sample rates") as refused:
        parse_ensemble_file(data)
    assert "scnet_48k 48000 Hz" in refused.value.problem


def test_a_stem_with_nothing_left_to_take_the_residual_is_allowed():
    """A drum-kit ensemble: no model gives 'other', so there is no 'other' to require."""
    data = tomllib.loads('name = "kit"\n[stems.kick]\nmodels = ["drumsep"]\n')
    assert parse_ensemble_file(data).spec == "kick=drumsep"


def test_a_name_that_does_not_match_its_file_is_refused(user_folder):
    write(user_folder, "mine", MINE.replace('"mine"', '"yours"'))
    with pytest.raises(EnsembleError, match="does not match the file name") as refused:
        load_ensemble("mine")
    assert 'Set name = "mine"' in refused.value.fix


def test_an_unknown_name_lists_the_ensembles_and_where_to_put_a_file(user_folder):
    with pytest.raises(EnsembleError, match="no ensemble named 'nope'") as refused:
        load_ensemble("nope")
    assert "best-vocals" in refused.value.fix and str(user_folder) in refused.value.fix


def test_a_broken_file_is_refused_before_any_model_loads(user_folder, monkeypatch):
    write(user_folder, "typo", 'name = "typo"\n[stems.vocals]\nmodels = ["htdemucs_fx"]\n')

    def no_download(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the file was checked")

    monkeypatch.setattr(loader, "resolve_weights", no_download)
    with pytest.raises(EnsembleError, match="'htdemucs_fx' is not a model name"):
        load_separator("typo")


# -- end to end --------------------------------------------------------------------------

DUET = """
name = "duet"
description = "tiny models: every rule kind on a real split"

[stems.vocals]
models = ["htdemucs", "dsp"]
rule = "max_fft"

[stems.drums]
models = ["htdemucs"]

[stems.bass]
models = ["dsp", "htdemucs"]
rule = "median_wave"

[stems.other]
models = ["dsp"]
"""


def test_a_file_ensemble_splits_a_song_into_stems_that_sum_to_it(
    tmp_path, user_folder, tiny_checkpoint, monkeypatch
):
    # 'htdemucs' is a small random network here: nothing is downloaded.
    monkeypatch.setattr(loader, "resolve_weights", lambda spec, **_: [tiny_checkpoint])
    write(user_folder, "duet", DUET)
    song = write_wav(tmp_path / "song.wav", noise(seconds=2.0))
    separator = load_separator("duet", device="cpu")
    assert separator.name == "duet" and separator.sources == ("vocals", "drums", "bass", "other")
    result = split_file(song, separator, tmp_path / "out")
    assert result.folder.parent.name == "duet"  # OUT/<ensemble name>/<track>
    stems = [soundfile.read(path, dtype="float32")[0] for path in result.stems.values()]
    mix = soundfile.read(song, dtype="float32")[0]
    np.testing.assert_allclose(sum(stems), mix, atol=1e-5)
    assert all(np.abs(stem).max() > 0 for stem in stems)


# -- packaging and the catalogues --------------------------------------------------------


def test_the_built_ins_ship_in_the_wheel_from_the_ensembles_folder():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package = "daw_bridge.separation.builtin_ensembles"
    assert package in setuptools["packages"]
    assert setuptools["package-dir"][package] == "ensembles"
    assert setuptools["package-data"][package] == ["*.toml"]
    assert library.builtin_dir() == ROOT / "ensembles"


def test_the_stem_catalogue_agrees_with_the_models_it_names():
    from daw_bridge.separation.dsp import SOURCES
    from daw_bridge.separation.keep import REST_STEM as KEEP_REST

    assert set(catalogue_stems()) == set(model_names())
    assert loader.DSP_MODEL == DSP_MODEL and DSP_STEMS == SOURCES and REST_STEM == KEEP_REST
    assert {"kick", "snare", "cymbals", "toms", "guitar", "piano"} <= set(all_model_stems())


def test_an_edited_file_changes_what_its_name_stands_for(user_folder):
    """The server's stem cache keys on this, so an edit never serves the old file's stems."""
    write(user_folder, "mine", MINE)
    before = expand("mine")
    write(user_folder, "mine", MINE.replace('"mdx23c_vocals"]', '"bs_roformer_vocals"]'))
    assert expand("mine") != before and "bs_roformer_vocals" in expand("mine")
