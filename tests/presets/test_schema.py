"""Preset files: what is valid, and how each mistake is named (file, key, allowed values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daw_bridge.presets import library
from daw_bridge.presets.schema import PresetError, read_preset_file

GOOD = """
name = "mine"
description = "a test preset"
tail = "extend"

[stems.vocals]
gain_db = -3
loudness_lufs = -18

[[stems.vocals.chain]]
plugin = "HighpassFilter"
cutoff_frequency_hz = 120

[[stems.vocals.chain]]
plugin = "LadderFilter"
mode = "LPF24"

[stems.default]
mute = true
"""


def write(folder: Path, text: str, name: str = "mine.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_preset_reads_into_its_settings(tmp_path):
    preset = read_preset_file(write(tmp_path, GOOD))
    assert preset.name == "mine" and preset.tail == "extend"
    vocals = preset.settings_for("vocals")
    assert vocals.gain_db == -3.0 and vocals.loudness_lufs == -18.0 and not vocals.mute
    assert [step.plugin for step in vocals.chain] == ["HighpassFilter", "LadderFilter"]
    assert vocals.chain[0].parameters == {"cutoff_frequency_hz": 120.0}
    # Stems the preset does not name fall back to [stems.default].
    assert preset.settings_for("drums").mute and preset.settings_for("no_vocals").mute


def test_without_a_default_unnamed_stems_pass_through(tmp_path):
    preset = read_preset_file(write(tmp_path, 'name = "x"\n[stems.vocals]\nmute = true\n'))
    assert preset.settings_for("drums").passthrough and not preset.settings_for("drums").mute


def with_vocals(chain: str = "", settings: str = "") -> str:
    return f'name = "bad"\n[stems.vocals]\n{settings}\n{chain}'


@pytest.mark.parametrize(
    ("text", "key", "problem", "allowed"),
    [
        (
            with_vocals('[[stems.vocals.chain]]\nplugin = "Reverbb"\n'),
            "stems.vocals.chain[0].plugin",
            "'Reverbb' is not a known plugin",
            "HighpassFilter",
        ),
        (
            with_vocals('[[stems.vocals.chain]]\nplugin = "Compressor"\ntreshold_db = -10\n'),
            "stems.vocals.chain[0].treshold_db",
            "Compressor has no parameter 'treshold_db'",
            "threshold_db, ratio, attack_ms, release_ms",
        ),
        (
            with_vocals('[[stems.vocals.chain]]\nplugin = "Compressor"\nratio = "high"\n'),
            "stems.vocals.chain[0].ratio",
            "must be a number, not text",
            "from 1 to 100",
        ),
        (
            with_vocals('[[stems.vocals.chain]]\nplugin = "Compressor"\nratio = 0.5\n'),
            "stems.vocals.chain[0].ratio",
            "0.5 is out of range",
            "from 1 to 100",
        ),
        (
            with_vocals('[[stems.vocals.chain]]\nplugin = "Reverb"\nroom_size = true\n'),
            "stems.vocals.chain[0].room_size",
            "must be a number, not true/false",
            "from 0 to 1",
        ),
        (
            with_vocals('[[stems.vocals.chain]]\nplugin = "LadderFilter"\nmode = "LPF48"\n'),
            "stems.vocals.chain[0].mode",
            "'LPF48' is not allowed",
            '"LPF12", "HPF12"',
        ),
        (
            'name = "bad"\n[stems.vox]\ngain_db = 1\n',
            "stems.vox",
            "'vox' is not a stem",
            "no_vocals",
        ),
        (with_vocals(settings="gain_db = 99"), "stems.vocals.gain_db", "99 is out of range", "-60"),
        (with_vocals(settings="mute = 1"), "stems.vocals.mute", "true or false", "mute = true"),
        (
            with_vocals(settings="volume = 1"),
            "stems.vocals.volume",
            "not a stem setting",
            "gain_db",
        ),
        (
            with_vocals(settings="loudness_lufs = 3"),
            "stems.vocals.loudness_lufs",
            "3 is out of range",
            "from -70 to 0",
        ),
        ('name = "bad"\ncolour = 1\n[stems.vocals]\n', "colour", "not a preset setting", "tail"),
        ('name = "bad"\ntail = "long"\n[stems.vocals]\n', "tail", "not a tail mode", "extend"),
        ('name = "Bad Name"\n[stems.vocals]\n', "name", "not a valid preset name", "lowercase"),
        ('description = "no name"\n[stems.vocals]\n', "name", "is missing", "lowercase"),
        ('name = "bad"\n', "stems", "is missing or empty", "[stems.<stem>]"),
        (
            with_vocals('[[stems.vocals.chain]]\nplugin = "vst3"\n'),
            "stems.vocals.chain[0].path",
            "is missing",
            ".vst3",
        ),
        (
            with_vocals('[[stems.vocals.chain]]\nplugin = "Gain"\npath = "/x.vst3"\n'),
            "stems.vocals.chain[0].path",
            "only applies to vst3/au",
            "vst3",
        ),
    ],
)
def test_invalid_presets_name_the_file_the_key_and_what_is_allowed(
    tmp_path, text, key, problem, allowed
):
    path = write(tmp_path, text)
    with pytest.raises(PresetError) as caught:
        read_preset_file(path)
    error = caught.value
    assert str(path) in error.problem
    assert f"{key}: " in error.problem and problem in error.problem
    assert allowed in error.fix


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    text = with_vocals(
        '[[stems.vocals.chain]]\nplugin = "Compressor"\nratio = 0\nknee = 3\n',
        settings='gain_db = "loud"',
    )
    with pytest.raises(PresetError) as caught:
        read_preset_file(write(tmp_path, text))
    problem = caught.value.problem
    assert "has 3 problems" in problem
    for key in ("stems.vocals.gain_db", "stems.vocals.chain[0].ratio", "chain[0].knee"):
        assert key in problem
    assert "presets validate" in caught.value.fix


def test_broken_toml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, 'name = "x"\n[stems.vocals\n')
    with pytest.raises(PresetError, match="not valid TOML") as caught:
        read_preset_file(path)
    assert str(path) in caught.value.problem and "line 2" in caught.value.problem


def test_external_plugin_paths_are_resolved_beside_the_preset(tmp_path):
    text = with_vocals(
        '[[stems.vocals.chain]]\nplugin = "vst3"\npath = "plugins/My Comp.vst3"\nDrive = 0.5\n'
    )
    preset = read_preset_file(write(tmp_path, text))
    (step,) = preset.external_plugins
    assert step.path == (tmp_path / "plugins" / "My Comp.vst3").resolve()
    assert step.parameters == {"Drive": 0.5}


@pytest.fixture
def user_presets(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "user-presets"
    folder.mkdir()
    monkeypatch.setenv("DAW_BRIDGE_PRESET_DIR", str(folder))
    return folder


def test_presets_are_found_by_name_in_the_user_folder_before_the_built_ins(user_presets):
    builtin = {entry.name for entry in library.available() if entry.origin == "built-in"}
    assert "karaoke" in builtin
    write(user_presets, 'name = "karaoke"\n[stems.vocals]\ngain_db = -20\n', "karaoke.toml")
    write(user_presets, GOOD)
    entries = {entry.name: entry for entry in library.available()}
    assert entries["karaoke"].origin == "user" and entries["mine"].origin == "user"
    assert library.load("karaoke").settings_for("vocals").gain_db == -20.0
    assert library.load("mine").tail == "extend"


def test_presets_by_path_and_unknown_names(user_presets, tmp_path):
    path = write(tmp_path, GOOD, "anything.toml")
    assert library.load(str(path)).name == "mine"  # by path the file name need not match
    with pytest.raises(PresetError, match="no preset named 'nope'") as caught:
        library.load("nope")
    assert "karaoke" in caught.value.fix and str(user_presets) in caught.value.fix
    with pytest.raises(PresetError, match="not found"):
        library.load(str(tmp_path / "missing.toml"))


def test_a_name_that_does_not_match_its_file_is_refused(user_presets):
    write(user_presets, GOOD, "other-name.toml")
    with pytest.raises(PresetError, match="does not match the file name"):
        library.load("other-name")


def test_every_stem_a_catalogue_model_gives_may_have_a_preset_section(tmp_path):
    """Drum-kit pieces, MSST's instrumental, two-stem complements, keep's rest: all allowed."""
    from daw_bridge.models.stems import catalogue_stems

    given = {stem for stems in catalogue_stems().values() for stem in stems}
    names = list(dict.fromkeys([*given, "kick", "cymbals", "instrumental", "rest", "no_kick"]))
    sections = "".join(f"[stems.{name}]\ngain_db = -1\n" for name in names)
    preset = read_preset_file(write(tmp_path, f'name = "every"\n{sections}'))
    assert set(names) <= set(preset.stems)


def test_a_model_added_to_the_catalogue_brings_its_stems_to_presets(tmp_path, monkeypatch):
    """Stem names come from the catalogues, not a list here: a new drum model's pieces
    (say, cowbell and shaker) are allowed as soon as its entry exists."""
    import dataclasses

    from daw_bridge.models.msst.catalog import MSST_MODELS

    text = 'name = "kit"\n[stems.cowbell]\ngain_db = -2\n[stems.no_shaker]\nmute = true\n'
    with pytest.raises(PresetError, match="'cowbell' is not a stem of any model"):
        read_preset_file(write(tmp_path, text))
    pieces = ("kick", "snare", "cowbell", "shaker")
    kit = dataclasses.replace(MSST_MODELS["drumsep"], name="percussion", stems=pieces)
    monkeypatch.setitem(MSST_MODELS, "percussion", kit)
    preset = read_preset_file(write(tmp_path, text))
    assert preset.settings_for("cowbell").gain_db == -2.0 and preset.settings_for("no_shaker").mute


def test_the_six_piece_drum_models_pieces_are_stems_for_presets(tmp_path):
    text = 'name = "kit"\n[stems.hh]\ngain_db = -2\n[stems.ride]\nmute = true\n'
    preset = read_preset_file(write(tmp_path, text))
    assert preset.settings_for("hh").gain_db == -2.0 and preset.settings_for("ride").mute


def test_a_misspelt_stem_gets_a_suggestion_and_the_full_list(tmp_path):
    with pytest.raises(PresetError) as refused:
        read_preset_file(write(tmp_path, 'name = "x"\n[stems.snares]\ngain_db = 1\n'))
    assert "Did you mean 'snare'?" in refused.value.problem
    assert "kick" in refused.value.fix and "instrumental" in refused.value.fix
