"""Drum kits in REAPER: the "Split drums into kit pieces" action, the drum-kit setting on
whole-clip splits, and the Settings pick lists (issue 16, points 6 and 7).

The Lua runs for real against the fake REAPER and a real server; any model can stand in
for a drum-kit model, so ``dsp`` does (its pieces: drums, bass, other, vocals).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

from daw_bridge.audio.io import read_span
from daw_bridge.models.loader import model_names
from daw_bridge.models.stems import catalogue_stems
from daw_bridge.reaper import keyvalue
from daw_bridge.reaper.actions import ACTIONS
from daw_bridge.reaper.choices import drum_kit_models
from daw_bridge.reaper.request import Refusal, read_request
from daw_bridge.reaper.runner import submit_options
from tests.conftest import noise, write_wav
from tests.reaper.conftest import configure
from tests.reaper.fake_reaper import FakeReaper

SPLIT = ACTIONS[0].file
TWO_STEMS = ACTIONS[1].file
SETTINGS = "daw-bridge - Settings.lua"
KIT = "daw-bridge - Split drums into kit pieces.lua"
#: dsp's stems as kit pieces: unknown pieces keep their stem labels.
DSP_PIECES = ["Drums", "Bass", "Other", "Vocals"]
MODEL_LINE, DRUM_KIT_LINE = 1, 2  # the Settings menu's first two lines


@pytest.fixture
def source(tmp_path) -> Path:
    return write_wav(tmp_path / "kit.wav", noise(seconds=8.0, seed=5), 44100)


def run_action(reaper: FakeReaper, action: str) -> None:
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / action)
    reaper.run_defer(timeout=120)


def request_path(reaper: FakeReaper) -> Path:
    return Path(shlex.split(reaper.exec_calls[-1].cmdline)[-1])


# -- the action ------------------------------------------------------------------------


def test_the_action_is_installed_and_listed_for_reapack(reaper) -> None:
    assert KIT in [action.file for action in ACTIONS]
    assert (reaper.resource_path / "Scripts" / "daw-bridge" / KIT).is_file()
    index = (Path(__file__).resolve().parents[2] / "reaper_scripts" / "index.xml").read_text()
    assert f'file="{KIT}"' in index


def test_kit_pieces_land_in_a_sub_folder_of_the_drums_track_time_aligned_in_one_undo_point(
    reaper, server, source
) -> None:
    """The drums track is the last child of a user's folder: its pieces take over closing
    that folder, so the track after it stays outside."""
    configure(reaper, server.address, drum_kit="dsp")
    reaper.add_track("Band", folder_depth=1)
    drums = reaper.add_track("Drums", folder_depth=-1)
    reaper.add_track("Keys")
    reaper.select_items(
        reaper.add_audio_item(drums, source, 4.0, 2.0, startoffs=1.5, fadein=0.05, fadeout=0.2)
    )

    run_action(reaper, KIT)

    assert reaper.message_boxes == []
    assert reaper.track_tree() == [
        "Band", "  Drums", *(f"    {piece}" for piece in DSP_PIECES), "Keys"
    ]  # fmt: skip
    # The drums track opens the sub-folder; its last piece closes it and the Band folder.
    assert [row["folder_depth"] for row in reaper.track_summary()] == [1, 1, 0, 0, 0, -2, 0]
    pieces = [t for t in reaper.project.tracks if t.parent is drums]
    assert [t.name for t in pieces] == DSP_PIECES and pieces[-1].folder_depth == -2
    assert reaper.undo_history == ["daw-bridge: insert drum-kit pieces"]
    request = keyvalue.read(request_path(reaper))
    assert request["mode"] == "kit" and request["drum_kit"] == "dsp"
    # Each piece plays at the drum item's place, from the drum item's played span.
    files = []
    for track in pieces:
        (item,) = track.items
        assert (item.position, item.length) == (4.0, 2.0)
        assert (item.get("D_FADEINLEN"), item.get("D_FADEOUTLEN")) == (0.05, 0.2)
        assert item.active_take.get("D_STARTOFFS") == 0.0
        files.append(read_span(Path(item.active_take.source.filename)).samples)
    span = read_span(source, 1.5, 2.0).samples
    assert all(piece.shape == span.shape for piece in files)
    # Raw pieces, but dsp's masks still add up to what they were given: the same span.
    np.testing.assert_allclose(sum(files), span, atol=2e-3)

    # Again on the same item: the same sub-folder, its pieces replaced, not stacked.
    tree = reaper.track_tree()
    reaper.select_items(drums.items[0])
    run_action(reaper, KIT)
    assert reaper.track_tree() == tree and all(len(track.items) == 1 for track in pieces)


def test_a_split_with_the_drum_kit_setting_nests_the_pieces_under_the_drums_stem(
    reaper, server, source
) -> None:
    configure(reaper, server.address, drum_kit="dsp")
    song = reaper.add_track("Song")
    item = reaper.add_audio_item(song, source, 1.0, 2.0)
    reaper.select_items(item)

    run_action(reaper, SPLIT)

    assert reaper.message_boxes == []
    tree = [
        "Song", "Song stems", "  Drums", *(f"    {p}" for p in DSP_PIECES), "    Drums rest",
        "  Bass", "  Other", "  Vocals",
    ]  # fmt: skip
    assert reaper.track_tree() == tree
    summary = reaper.track_summary()
    assert [row["folder_depth"] for row in summary] == [0, 1, 1, 0, 0, 0, 0, -1, 0, 0, -1]
    assert reaper.undo_history == ["daw-bridge: insert stems"]
    drums_stem = next(t for t in reaper.project.tracks if t.name == "Drums" and t.level == 1)
    kick_slot = next(t for t in reaper.project.tracks if t.parent is drums_stem)
    assert kick_slot.items[0].position == 1.0 and kick_slot.items[0].length == 2.0

    # Splitting the item again reuses both folders and replaces the items in them.
    reaper.select_items(item)
    run_action(reaper, SPLIT)
    assert reaper.track_tree() == tree
    assert all(row["items"] == 1 for row in reaper.track_summary()[2:])


def test_the_drum_kit_setting_is_left_out_where_a_split_delivers_no_drums(tmp_path) -> None:
    def options(**settings: str) -> dict:
        values = {"version": "1", "drum_kit": "drumsep", "items": "", **settings}
        keyvalue.write(tmp_path / "request.txt", values)
        return submit_options(read_request(tmp_path / "request.txt"))

    assert options()["drum_kit"] == "drumsep"
    assert options(two_stems="drums")["drum_kit"] == "drumsep"
    assert options(two_stems="vocals")["drum_kit"] is None
    assert options(keep="vocals")["drum_kit"] is None
    assert options(keep="drums bass")["drum_kit"] == "drumsep"
    assert options(drum_kit="")["drum_kit"] is None
    # The action splits the item itself with the drum-kit model, drumsep when none is set.
    assert options(mode="kit") == {"model": "drumsep", "sum_to_input": False}
    assert options(mode="kit", drum_kit="")["model"] == "drumsep"


def test_the_action_refuses_a_stem_that_is_not_drums(tmp_path, source) -> None:
    item = {"type": "WAVE", "file": source, "length": 1.0, "source_length": 8.0}
    values = {"version": "1", "mode": "kit", "items": "1,2,3"}
    for key, stem in (("1", "vocals"), ("2", "drums"), ("3", "")):
        values.update({f"item.{key}.{name}": value for name, value in item.items()})
        values[f"item.{key}.stem"] = stem
    keyvalue.write(tmp_path / "request.txt", values)
    vocals, drums, recording = read_request(tmp_path / "request.txt").items
    assert isinstance(vocals, Refusal) and "vocals stem, not drums" in vocals.problem
    assert not isinstance(drums, Refusal) and not isinstance(recording, Refusal)


# -- pick lists in Settings --------------------------------------------------------------


def menu_names(menu: str) -> list[str]:
    """The setting values a pick list offers: each line's name, before " - "."""
    lines = menu.split("|")[:-1]  # the last line types a name instead
    return [line.lstrip("!").split(" - ")[0] for line in lines]


def ensemble_names() -> list[str]:
    try:
        from daw_bridge.separation.ensemble_library import ensemble_names as names
    except ImportError:
        return []
    return names()


def test_the_model_pick_list_offers_exactly_the_catalogue_and_the_ensembles(reaper) -> None:
    reaper.menu_answers += [MODEL_LINE, lambda menu: menu_names(menu).index("htdemucs_ft") + 1]
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SETTINGS)

    (_top, _), (menu, _) = reaper.menus
    default, *names = menu_names(menu)
    assert default.startswith("Server default") and names == [*model_names(), *ensemble_names()]
    assert menu.split("|")[0].startswith("!")  # nothing set yet: the default is ticked
    assert "[licence: MIT" in menu.split("|")[1]  # each model says its weights' licence
    assert reaper.persistent_ext_state[("daw-bridge", "model")] == "htdemucs_ft"
    assert reaper.message_boxes == []


def test_the_picked_model_and_drum_kit_reach_the_server_options(reaper, source) -> None:
    reaper.menu_answers += [DRUM_KIT_LINE, lambda menu: menu_names(menu).index("drumsep") + 1]
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SETTINGS)
    drum_menu = reaper.menus[-1][0]
    # Off, then exactly the catalogue models that give kit pieces.
    assert menu_names(drum_menu)[1:] == drum_kit_models()
    kits = {name: stems for name, stems in catalogue_stems().items() if "kick" in stems}
    assert "drumsep" in kits and set(drum_kit_models()) == set(kits)
    reaper.menu_answers += [MODEL_LINE, lambda menu: menu_names(menu).index("scnet") + 1]
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SETTINGS)

    configure(reaper, "tcp://127.0.0.1:9")  # nothing answers: only the request matters
    track = reaper.add_track("Song")
    reaper.select_items(reaper.add_audio_item(track, source, 0.0, 1.0))
    run_action(reaper, SPLIT)
    split = submit_options(read_request(request_path(reaper)))
    assert (split["model"], split["drum_kit"]) == ("scnet", "drumsep")
    reaper.select_items(reaper.add_audio_item(track, source, 2.0, 1.0))
    run_action(reaper, KIT)
    assert submit_options(read_request(request_path(reaper)))["model"] == "drumsep"


def test_a_model_can_still_be_typed_from_the_pick_list(reaper) -> None:
    reaper.menu_answers += [MODEL_LINE, lambda menu: len(menu.split("|"))]  # the last line
    reaper.user_inputs.append(" /models/mine.ckpt ")
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SETTINGS)
    assert reaper.persistent_ext_state[("daw-bridge", "model")] == "/models/mine.ckpt"


def test_a_dismissed_menu_changes_nothing(reaper) -> None:
    reaper.ext_state[("daw-bridge", "model")] = "dsp"
    reaper.menu_answers += [MODEL_LINE, 0]
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SETTINGS)
    assert "Model: dsp..." in reaper.menus[0][0]
    assert "!dsp - " in reaper.menus[1][0]  # the current model is ticked
    assert ("daw-bridge", "model") not in reaper.persistent_ext_state
