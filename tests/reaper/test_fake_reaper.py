"""Specification of the fake REAPER that the Lua shims are tested against.

Each test runs real Lua 5.4 code (lupa) through ``FakeReaper.run_script`` and checks what a
script sees and what the test can inspect afterwards.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import noise, write_wav
from tests.reaper.fake_reaper import (
    FakeReaper,
    LuaScriptError,
    ReaperError,
    UnknownApiFunction,
    load_api,
)

PY = sys.executable


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeReaper]:
    with FakeReaper(tmp_path / "reaper") as reaper:
        yield reaper


def lua(fake: FakeReaper, folder: Path, code: str, name: str = "script.lua"):
    """Write ``code`` to ``folder/name`` and run it as a ReaScript."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return fake.run_script(path)


def state(fake: FakeReaper, key: str) -> str:
    """What a script reported through ExtState section "t"."""
    return fake.ext_state["t", key]


# ------------------------------------------------------------------ the API contract


def test_every_implemented_function_is_a_reaper_api_function(fake: FakeReaper) -> None:
    api = load_api()
    assert fake.implemented, "the fake implements something"
    assert set(fake.implemented) <= set(api)
    for required in ("reaper.GetSetMediaItemInfo_String", "reaper.ExecProcess", "gfx.drawstr"):
        assert required in fake.implemented


def test_registering_a_name_outside_the_api_raises(fake: FakeReaper) -> None:
    with pytest.raises(UnknownApiFunction, match=r"reaper\.GetItemByMagic"):
        fake.register("reaper.GetItemByMagic", lambda: None)


def test_a_test_can_stub_an_api_function_for_later_scripts(
    fake: FakeReaper, tmp_path: Path
) -> None:
    fake.register("reaper.GetPlayState", lambda: 1)
    lua(fake, tmp_path, 'reaper.SetExtState("t", "play", tostring(reaper.GetPlayState()), false)')
    assert state(fake, "play") == "1"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("reaper.GetTrack(0)", r"reaper\.GetTrack: expected 2 arguments \(proj, trackidx\), got 1"),
        ("reaper.CountTracks(0, 1)", r"reaper\.CountTracks: expected 1 argument \(proj\), got 2"),
        ("reaper.GetMediaItemTakeInfo_Value()", r"expected 2 arguments .*got 0"),
        # Optional parameters widen the accepted range.
        ("reaper.MIDI_InsertNote(nil)", r"reaper\.MIDI_InsertNote: expected 8 to 9 arguments"),
    ],
)
def test_calls_with_a_wrong_number_of_arguments_fail_at_the_calling_line(
    fake: FakeReaper, tmp_path: Path, call: str, message: str
) -> None:
    fake.register("reaper.MIDI_InsertNote", lambda *args: True)
    with pytest.raises(LuaScriptError, match=message) as err:
        lua(fake, tmp_path, f"local x = 1\n{call}\n")
    assert "script.lua:2:" in str(err.value)


def test_trailing_nil_arguments_count_like_in_lua(fake: FakeReaper, tmp_path: Path) -> None:
    with pytest.raises(LuaScriptError, match=r"expected 1 argument \(proj\), got 2"):
        lua(fake, tmp_path, "reaper.CountTracks(0, nil)")


def test_functions_without_parameter_list_take_any_arguments(
    fake: FakeReaper, tmp_path: Path
) -> None:
    lua(
        fake,
        tmp_path,
        """
        gfx.init("x", 100, 50, 0, 10, 10)
        gfx.set(1) ; gfx.set(1, 0.5, 0.25, 1, 0, -1, 1)
        local _, path = reaper.get_action_context()
        reaper.defer(function() end)
        """,
    )
    fake.run_defer()


def test_api_functions_the_fake_lacks_exist_but_fail_when_called(
    fake: FakeReaper, tmp_path: Path
) -> None:
    assert "reaper.CSurf_OnPlay" in load_api()
    assert "reaper.CSurf_OnPlay" not in fake.implemented
    code = """
    reaper.SetExtState("t", "exists", tostring(reaper.CSurf_OnPlay ~= nil), false)
    reaper.CSurf_OnPlay()
    """
    with pytest.raises(LuaScriptError, match=r"not implemented in the fake: reaper\.CSurf_OnPlay"):
        lua(fake, tmp_path, code)
    assert state(fake, "exists") == "true"


def test_names_reaper_does_not_have_are_a_distinct_error(fake: FakeReaper, tmp_path: Path) -> None:
    with pytest.raises(LuaScriptError, match=r"REAPER has no function reaper\.GetItemByMagic"):
        lua(fake, tmp_path, "reaper.GetItemByMagic(0)")
    with pytest.raises(LuaScriptError, match=r"REAPER has no function or variable gfx\.blink"):
        lua(fake, tmp_path, "gfx.blink()")


def test_apiexists_answers_for_reaper_not_for_the_fake(fake: FakeReaper, tmp_path: Path) -> None:
    lua(
        fake,
        tmp_path,
        """
        reaper.SetExtState("t", "a", tostring(reaper.APIExists("CSurf_OnPlay")), false)
        reaper.SetExtState("t", "b", tostring(reaper.APIExists("BR_GetMediaItemGUID")), false)
        """,
    )
    assert (state(fake, "a"), state(fake, "b")) == ("true", "false")


def test_pointer_arguments_are_checked_for_kind_and_deletion(
    fake: FakeReaper, tmp_path: Path
) -> None:
    track = fake.add_track("A")
    fake.select_items(fake.add_empty_item(track, 0, 1))
    with pytest.raises(
        LuaScriptError, match=r"argument 1 \(item\) must be a MediaItem, got MediaTrack"
    ):
        lua(fake, tmp_path, 'reaper.GetMediaItemInfo_Value(reaper.GetTrack(0, 0), "D_POSITION")')
    with pytest.raises(LuaScriptError, match=r"argument 1 \(item\) is a deleted MediaItem"):
        lua(
            fake,
            tmp_path,
            """
            local item = reaper.GetSelectedMediaItem(0, 0)
            reaper.DeleteTrackMediaItem(reaper.GetTrack(0, 0), item)
            reaper.GetMediaItemInfo_Value(item, "D_POSITION")
            """,
        )


def test_validateptr2_tells_live_pointers_from_deleted_ones(
    fake: FakeReaper, tmp_path: Path
) -> None:
    fake.add_empty_item(fake.add_track("A"))
    lua(
        fake,
        tmp_path,
        """
        local track = reaper.GetTrack(0, 0)
        local item = reaper.GetTrackMediaItem(track, 0)
        local before = reaper.ValidatePtr2(0, item, "MediaItem*")
        local wrong = reaper.ValidatePtr2(0, track, "MediaItem*")
        reaper.DeleteTrack(track)
        local after = reaper.ValidatePtr2(0, item, "MediaItem*")
        reaper.SetExtState("t", "v", table.concat({tostring(before), tostring(wrong),
          tostring(after), tostring(reaper.ValidatePtr(track, "MediaTrack*"))}, "|"), false)
        """,
    )
    assert state(fake, "v") == "true|false|false|false"


def test_pointers_are_opaque_userdata_with_identity(fake: FakeReaper, tmp_path: Path) -> None:
    fake.add_track("A")
    lua(
        fake,
        tmp_path,
        """
        local a, b = reaper.GetTrack(0, 0), reaper.GetTrack(0, 0)
        reaper.SetExtState("t", "same", tostring(a == b and tostring(a) == tostring(b)), false)
        reaper.SetExtState("t", "type", type(a), false)
        reaper.SetExtState("t", "index", tostring(pcall(function() return a.name end)), false)
        """,
    )
    assert (state(fake, "same"), state(fake, "type"), state(fake, "index")) == (
        "true",
        "userdata",
        "false",
    )


def test_unknown_parameter_names_are_errors_not_silent_zeros(
    fake: FakeReaper, tmp_path: Path
) -> None:
    fake.add_empty_item(fake.add_track(), 0, 1)
    with pytest.raises(LuaScriptError, match=r"unknown item parameter 'D_POSTION'"):
        lua(fake, tmp_path, 'reaper.GetMediaItemInfo_Value(reaper.GetMediaItem(0, 0), "D_POSTION")')


# ------------------------------------------------------------------ return conventions


def test_return_values_follow_reapers_lua_conventions(fake: FakeReaper, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", noise(seconds=1.5))
    item = fake.add_audio_item(fake.add_track("A"), wav, position=2.0, notes="hello")
    fake.select_items(item)
    fake.user_inputs.append(["x", "y"])
    lua(
        fake,
        tmp_path,
        """
        local function put(k, ...) reaper.SetExtState("t", k, table.concat({...}, "|"), false) end
        local item = reaper.GetSelectedMediaItem(0, 0)
        local ok, notes = reaper.GetSetMediaItemInfo_String(item, "P_NOTES", "", false)
        put("notes", tostring(ok), notes)
        local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
        put("pos", math.type(pos), tostring(pos))
        put("count", math.type(reaper.CountTracks(0)))
        local src = reaper.GetMediaItemTake_Source(reaper.GetActiveTake(item))
        local len, qn = reaper.GetMediaSourceLength(src)
        put("len", tostring(len), tostring(qn))
        put("section", tostring(select("#", reaper.PCM_Source_GetSectionInfo(src))))
        put("name", tostring(reaper.GetTrackName(reaper.GetTrack(0, 0))))
        put("inputs", tostring(reaper.GetUserInputs("T", 2, "a,b", "1,2")))
        put("nothing", tostring(select("#", reaper.UpdateArrange())))
        put("missing", tostring(reaper.GetTrack(0, 5)))
        """,
    )
    assert state(fake, "notes") == "true|hello"
    assert state(fake, "pos") == "float|2.0"
    assert state(fake, "count") == "integer"
    assert state(fake, "len") == "1.5|false"
    assert state(fake, "section") == "4"
    assert state(fake, "name") == "true"
    assert state(fake, "inputs") == "true"
    assert state(fake, "nothing") == "0"
    assert state(fake, "missing") == "nil"


# ------------------------------------------------------------------ scene and object model


def test_audio_items_read_their_source_from_the_real_file(fake: FakeReaper, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "song.wav", noise(channels=2, seconds=2.0, samplerate=48000), 48000)
    track = fake.add_track("Song")
    item = fake.add_audio_item(track, wav, position=1.0, startoffs=0.5, playrate=2.0)
    assert item.length == pytest.approx(0.75)  # (2.0 - 0.5) / 2
    fake.select_items(item)
    lua(
        fake,
        tmp_path,
        """
        local take = reaper.GetActiveTake(reaper.GetSelectedMediaItem(0, 0))
        local src = reaper.GetMediaItemTake_Source(take)
        reaper.SetExtState("t", "src", table.concat({reaper.GetMediaSourceType(src),
          reaper.GetMediaSourceFileName(src), reaper.GetMediaSourceSampleRate(src),
          reaper.GetMediaSourceNumChannels(src), (reaper.GetMediaSourceLength(src)),
          reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS"),
          reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE"),
          tostring(reaper.TakeIsMIDI(take))}, "|"), false)
        """,
    )
    assert state(fake, "src") == f"WAVE|{wav}|48000|2|2.0|0.5|2.0|false"


def test_midi_empty_and_multi_take_items(fake: FakeReaper, tmp_path: Path) -> None:
    track = fake.add_track()
    midi = fake.add_midi_item(track, 0.0, 2.0)
    empty = fake.add_empty_item(track, 3.0, 1.0)
    multi = fake.add_audio_item(track, write_wav(tmp_path / "a.wav", noise()), 5.0)
    fake.add_take(multi, fake.make_source(write_wav(tmp_path / "b.wav", noise())), active=False)
    fake.select_items(midi, empty, multi)
    lua(
        fake,
        tmp_path,
        """
        local midi, empty, multi = reaper.GetSelectedMediaItem(0, 0),
          reaper.GetSelectedMediaItem(0, 1), reaper.GetSelectedMediaItem(0, 2)
        local mtake = reaper.GetActiveTake(midi)
        local src = reaper.GetMediaItemTake_Source(mtake)
        local len, qn = reaper.GetMediaSourceLength(src)
        reaper.SetExtState("t", "midi", table.concat({tostring(reaper.TakeIsMIDI(mtake)),
          reaper.GetMediaSourceType(src), reaper.GetMediaSourceFileName(src), len, tostring(qn),
          reaper.GetMediaSourceSampleRate(src)}, "|"), false)
        reaper.SetExtState("t", "empty", tostring(reaper.GetActiveTake(empty)) .. "|"
          .. reaper.CountTakes(empty), false)
        local second = reaper.GetTake(multi, 1)
        reaper.SetActiveTake(second)
        reaper.SetExtState("t", "multi", reaper.CountTakes(multi) .. "|"
          .. tostring(reaper.GetActiveTake(multi) == second), false)
        """,
    )
    assert state(fake, "midi") == "true|MIDI||4.0|true|0"  # in-project MIDI: 2 s = 4 QN at 120
    assert state(fake, "empty") == "nil|0"
    assert state(fake, "multi") == "2|true"
    assert multi.active_take is multi.takes[1]


def test_new_items_and_takes_made_by_a_script(fake: FakeReaper, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "stem.wav", noise(seconds=3.0))
    fake.add_track("Stems")
    lua(
        fake,
        tmp_path,
        f"""
        local tr = reaper.GetTrack(0, 0)
        local item = reaper.AddMediaItemToTrack(tr)
        local take = reaper.AddTakeToMediaItem(item)
        reaper.SetExtState("t", "before", reaper.GetMediaSourceType(
          reaper.GetMediaItemTake_Source(take)), false)
        reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFile("{wav}"))
        reaper.SetMediaItemInfo_Value(item, "D_POSITION", 1.25)
        reaper.SetMediaItemInfo_Value(item, "D_LENGTH", 2)
        reaper.SetMediaItemInfo_Value(item, "C_FADEINSHAPE", 2.7)
        reaper.SetMediaItemTakeInfo_Value(take, "D_STARTOFFS", 0.5)
        reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", "vocals", true)
        reaper.GetSetMediaItemInfo_String(item, "P_EXT:daw_bridge", "job=1", true)
        reaper.SetMediaItemInfo_Value(item, "B_UISEL", 1)
        """,
    )
    (item,) = fake.items(fake.find_track("Stems"))
    assert state(fake, "before") == "EMPTY"
    assert item.describe()["takes"][0]["name"] == "vocals"
    assert item.describe()["takes"][0]["file"] == str(wav)
    assert item.describe()["takes"][0]["D_STARTOFFS"] == 0.5
    assert (item.position, item.length, item.get("C_FADEINSHAPE")) == (1.25, 2.0, 2.0)
    assert item.ext == {"daw_bridge": "job=1"} and item.selected
    assert fake.selected_items() == [item]


def test_section_sources_report_their_parent_and_section(fake: FakeReaper, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", noise(seconds=4.0))
    item = fake.add_section_item(
        fake.add_track(), wav, 1.0, section_offset=1.0, section_length=2.0, reverse=True
    )
    fake.select_items(item)
    lua(
        fake,
        tmp_path,
        """
        local src = reaper.GetMediaItemTake_Source(
          reaper.GetActiveTake(reaper.GetSelectedMediaItem(0, 0)))
        local parent = reaper.GetMediaSourceParent(src)
        local ok, offs, len, rev = reaper.PCM_Source_GetSectionInfo(src)
        local pok = reaper.PCM_Source_GetSectionInfo(parent)
        reaper.SetExtState("t", "s", table.concat({reaper.GetMediaSourceType(src),
          tostring(ok), offs, len, tostring(rev), reaper.GetMediaSourceType(parent),
          reaper.GetMediaSourceFileName(parent), tostring(pok),
          tostring(reaper.GetMediaSourceParent(parent))}, "|"), false)
        """,
    )
    assert state(fake, "s") == f"SECTION|true|1.0|2.0|true|WAVE|{wav}|false|nil"
    assert item.length == 2.0


# ------------------------------------------------------------------ tracks and folders


def folder_scene(fake: FakeReaper) -> None:
    """Song(1) > [Drums(1) > [Kick, Snare(-1)], Bass(-1)], After."""
    fake.add_track("Song", folder_depth=1)
    fake.add_track("Drums", folder_depth=1)
    fake.add_track("Kick")
    fake.add_track("Snare", folder_depth=-1)
    fake.add_track("Bass", folder_depth=-1)
    fake.add_track("After")


def test_folder_depth_gives_parents_like_reaper(fake: FakeReaper, tmp_path: Path) -> None:
    folder_scene(fake)
    assert fake.track_tree() == ["Song", "  Drums", "    Kick", "    Snare", "  Bass", "After"]
    lua(
        fake,
        tmp_path,
        """
        local out = {}
        for i = 0, reaper.CountTracks(0) - 1 do
          local tr = reaper.GetTrack(0, i)
          local parent = reaper.GetParentTrack(tr)
          local name = parent and select(2, reaper.GetTrackName(parent)) or "-"
          out[#out + 1] = name .. ":" .. reaper.GetTrackDepth(tr) .. ":"
            .. reaper.GetMediaTrackInfo_Value(tr, "IP_TRACKNUMBER")
        end
        reaper.SetExtState("t", "parents", table.concat(out, " "), false)
        """,
    )
    assert state(fake, "parents") == (
        "-:0:1.0 Song:1:2.0 Drums:2:3.0 Drums:2:4.0 Song:1:5.0 -:0:6.0"
    )


def test_closing_more_levels_than_open_is_clamped(fake: FakeReaper) -> None:
    fake.add_track("F", folder_depth=1)
    fake.add_track("Last", folder_depth=-5)
    fake.add_track("Top")
    assert fake.track_tree() == ["F", "  Last", "Top"]


def test_inserting_tracks_into_a_folder(fake: FakeReaper, tmp_path: Path) -> None:
    fake.add_track("Song")
    lua(
        fake,
        tmp_path,
        """
        local song = reaper.GetTrack(0, 0)
        reaper.SetMediaTrackInfo_Value(song, "I_FOLDERDEPTH", 1)
        for i, name in ipairs({"vocals", "drums"}) do
          reaper.Undo_BeginBlock()
          reaper.InsertTrackAtIndex(i, false)
          local tr = reaper.GetTrack(0, i)
          reaper.GetSetMediaTrackInfo_String(tr, "P_NAME", name, true)
          local red = reaper.ColorToNative(255, 0, 0) | 0x1000000
          reaper.SetMediaTrackInfo_Value(tr, "I_CUSTOMCOLOR", red)
          reaper.Undo_EndBlock("Insert " .. name, -1)
        end
        reaper.SetMediaTrackInfo_Value(reaper.GetTrack(0, 2), "I_FOLDERDEPTH", -1)
        local ok = reaper.SetMediaTrackInfo_Value(song, "IP_TRACKNUMBER", 7)
        reaper.SetExtState("t", "readonly", tostring(ok), false)
        """,
    )
    summary = fake.track_summary()
    assert [(t["name"], t["level"], t["parent"]) for t in summary] == [
        ("Song", 0, None),
        ("vocals", 1, "Song"),
        ("drums", 1, "Song"),
    ]
    assert summary[1]["color"] == fake._native(255, 0, 0) | 0x1000000
    assert state(fake, "readonly") == "false"
    assert fake.undo_history == ["Insert vocals", "Insert drums"]
    assert fake.changes_outside_undo == ["track I_FOLDERDEPTH=1", "track I_FOLDERDEPTH=-1"]


def test_deleting_tracks_keeps_the_folder_structure(fake: FakeReaper, tmp_path: Path) -> None:
    folder_scene(fake)
    snare = fake.find_track("Snare")
    item = fake.add_empty_item(snare)
    lua(fake, tmp_path, "reaper.DeleteTrack(reaper.GetTrack(0, 3))")  # Snare closed Drums
    assert fake.track_tree() == ["Song", "  Drums", "    Kick", "  Bass", "After"]
    assert snare.deleted and item.deleted
    lua(fake, tmp_path, "reaper.DeleteTrack(reaper.GetTrack(0, 1))")  # a folder parent
    assert fake.track_tree() == ["Song", "  Kick", "  Bass", "After"]


def test_unnamed_tracks_and_colours(fake: FakeReaper, tmp_path: Path) -> None:
    fake.add_track()
    lua(
        fake,
        tmp_path,
        """
        local _, name = reaper.GetTrackName(reaper.GetTrack(0, 0))
        local r, g, b = reaper.ColorFromNative(reaper.ColorToNative(1, 2, 3))
        reaper.SetExtState("t", "x", name .. "|" .. r .. g .. b .. "|"
          .. reaper.ColorToNative(1, 2, 3), false)
        """,
    )
    assert state(fake, "x") == f"Track 1|123|{(1 << 16) | (2 << 8) | 3}"


def test_colour_byte_order_follows_the_os(tmp_path: Path) -> None:
    with FakeReaper(tmp_path, os_name="Win64") as windows:
        lua(windows, tmp_path, 'reaper.SetExtState("t", "c", reaper.ColorToNative(1, 2, 3), 0)')
        assert state(windows, "c") == str(1 | (2 << 8) | (3 << 16))


# ------------------------------------------------------------------ undo


def test_each_undo_block_is_one_undo_point_with_its_changes(
    fake: FakeReaper, tmp_path: Path
) -> None:
    fake.add_track("A")
    lua(
        fake,
        tmp_path,
        """
        reaper.Undo_BeginBlock()
          reaper.Undo_BeginBlock2(0)            -- nested blocks merge into the outer one
          reaper.InsertTrackAtIndex(1, true)
          reaper.Undo_EndBlock2(0, "inner", 0)
          reaper.SetMediaTrackInfo_Value(reaper.GetTrack(0, 0), "B_MUTE", 1)
        reaper.Undo_EndBlock("Split into stems", -1)
        reaper.PreventUIRefresh(1)
        reaper.GetSetMediaTrackInfo_String(reaper.GetTrack(0, 1), "P_NAME", "loose", true)
        reaper.PreventUIRefresh(-1)
        """,
    )
    (point,) = fake.undo_points
    assert (point.description, point.flags) == ("Split into stems", -1)
    assert point.changes == ["insert track at 1", "track B_MUTE=1"]
    assert fake.changes_outside_undo == ["track P_NAME"]
    assert fake.problems == []


def test_unbalanced_undo_and_ui_refresh_are_reported(fake: FakeReaper, tmp_path: Path) -> None:
    lua(
        fake,
        tmp_path,
        'reaper.Undo_EndBlock("x", -1)\nreaper.Undo_BeginBlock()\nreaper.PreventUIRefresh(1)',
    )
    assert len(fake.problems) == 3, fake.problems


# ------------------------------------------------------------------ ExtState


def test_extstate_persistence_across_scripts_and_restarts(tmp_path: Path) -> None:
    ini: dict[tuple[str, str], str] = {}
    with FakeReaper(tmp_path, persistent_ext_state=ini) as fake:
        lua(
            fake,
            tmp_path,
            """
            reaper.SetExtState("daw", "kept", "1", true)
            reaper.SetExtState("daw", "session", "2", false)
            reaper.SetExtState("daw", "gone", "3", true)
            reaper.DeleteExtState("daw", "gone", true)
            """,
        )
        lua(
            fake,
            tmp_path,
            """
            reaper.SetExtState("t", "seen", reaper.GetExtState("daw", "session") .. "|"
              .. tostring(reaper.HasExtState("daw", "gone")) .. "|"
              .. reaper.GetExtState("daw", "nothing"), false)
            """,
        )
        assert state(fake, "seen") == "2|false|"
        fake.restart_reaper()
        assert ("daw", "session") not in fake.ext_state
    assert ini == {("daw", "kept"): "1"}
    with FakeReaper(tmp_path, persistent_ext_state=ini) as again:
        lua(again, tmp_path, 'reaper.SetExtState("t", "k", reaper.GetExtState("daw", "kept"), 0)')
        assert state(again, "k") == "1"


# ------------------------------------------------------------------ ExecProcess


def test_execprocess_waits_and_returns_exit_code_and_output(
    tmp_path: Path,
) -> None:
    with FakeReaper(tmp_path, env={"GREETING": "hi there", "PATH": "/usr/bin:/bin"}) as fake:
        code = "import os, sys; print(os.environ['GREETING'], sys.argv[1]); sys.exit(3)"
        lua(
            fake,
            tmp_path,
            f"""
            local out = reaper.ExecProcess([[{PY} -c "{code}" 'two words']], 0)
            reaper.SetExtState("t", "out", out, false)
            local timed = reaper.ExecProcess([[{PY} -c "import time; time.sleep(5)"]], 200)
            reaper.SetExtState("t", "timed", tostring(timed), false)
            reaper.SetExtState("t", "missing",
              tostring(reaper.ExecProcess("/no/such/program --flag", 1000)), false)
            """,
        )
        assert state(fake, "out") == "3\nhi there two words\n"
        assert state(fake, "timed") == "nil"
        assert state(fake, "missing") == "nil"
        assert fake.exec_calls[0].argv == [PY, "-c", code, "two words"]


def test_execprocess_in_background_returns_at_once(fake: FakeReaper, tmp_path: Path) -> None:
    marker = tmp_path / "done.txt"
    # The child takes 3 s; returning within 2 s shows the call did not wait for it, with
    # room for the Lua runtime's start on a loaded machine (0.68 s was seen under load).
    code = f"import time; time.sleep(3); open({str(marker)!r}, 'w').write('ok')"
    start = time.monotonic()
    lua(
        fake,
        tmp_path,
        f"""
        local r = reaper.ExecProcess([[{PY} -c "{code}"]], -2)
        reaper.SetExtState("t", "r", tostring(r), false)
        """,
    )
    assert time.monotonic() - start < 2.0
    assert state(fake, "r") == ""
    assert not marker.exists()
    (bg,) = fake.background
    assert fake.wait_background(timeout=10) == [0]
    assert marker.read_text() == "ok"
    assert bg.argv[0] == PY


def test_background_processes_are_killed_at_close(tmp_path: Path) -> None:
    with FakeReaper(tmp_path) as fake:
        lua(fake, tmp_path, f'reaper.ExecProcess("{PY} -c \\"import time; time.sleep(60)\\"", -1)')
        (bg,) = fake.background
        assert bg.popen.poll() is None
    assert bg.popen.poll() is not None


# ------------------------------------------------------------------ defer, atexit, errors


def test_defer_loop_runs_until_the_queue_is_empty_then_atexit(
    fake: FakeReaper, tmp_path: Path
) -> None:
    run = lua(
        fake,
        tmp_path,
        """
        local n = 0
        local function tick()
          n = n + 1
          reaper.SetExtState("t", "n", tostring(n), false)
          if n < 5 then reaper.defer(tick) end
        end
        reaper.atexit(function() reaper.SetExtState("t", "exit", "at " .. n, false) end)
        reaper.defer(tick)
        """,
    )
    assert run.running and ("t", "exit") not in fake.ext_state
    assert fake.run_defer(max_steps=2, sleep=0) == 2
    assert state(fake, "n") == "2"
    steps = fake.run_defer(until=lambda: state(fake, "n") == "4", sleep=0.001)
    assert (steps, state(fake, "n")) == (2, "4")
    fake.run_defer(sleep=0)
    assert not run.running
    assert state(fake, "exit") == "at 5"


def test_scripts_without_defer_end_after_the_main_chunk(fake: FakeReaper, tmp_path: Path) -> None:
    run = lua(fake, tmp_path, 'reaper.atexit(function() reaper.ShowConsoleMsg("bye\\n") end)')
    assert not run.running and fake.console == ["bye\n"]


def test_a_defer_loop_that_never_ends_times_out(fake: FakeReaper, tmp_path: Path) -> None:
    lua(fake, tmp_path, "local function f() reaper.defer(f) end\nf()")
    with pytest.raises(TimeoutError):
        fake.run_defer(timeout=0.2, sleep=0.01)
    fake.stop_script()
    assert fake.running == []


def test_lua_errors_surface_with_the_lua_traceback(fake: FakeReaper, tmp_path: Path) -> None:
    lua(
        fake,
        tmp_path,
        """
        local function explode() error("boom in a deferred function") end
        reaper.atexit(function() reaper.SetExtState("t", "cleaned", "yes", false) end)
        reaper.defer(function() explode() end)
        """,
    )
    with pytest.raises(LuaScriptError) as err:
        fake.run_defer()
    text = str(err.value)
    assert "script.lua:2: boom in a deferred function" in text
    assert "stack traceback" in text and "explode" in text
    assert state(fake, "cleaned") == "yes"  # the script ended: atexit handlers ran
    assert fake.running == []


def test_python_errors_inside_api_calls_carry_the_lua_traceback(
    fake: FakeReaper, tmp_path: Path
) -> None:
    def broken() -> int:
        raise ValueError("stub exploded")

    fake.register("reaper.GetPlayState", broken)
    with pytest.raises(LuaScriptError, match=r"ValueError: stub exploded") as err:
        lua(fake, tmp_path, "local x = 1\nreaper.GetPlayState()")
    assert "script.lua:2: in main chunk" in str(err.value)
    assert isinstance(err.value.__cause__, ValueError)


def test_syntax_errors_name_the_file(fake: FakeReaper, tmp_path: Path) -> None:
    with pytest.raises(LuaScriptError, match=r"script\.lua:1:"):
        lua(fake, tmp_path, "local = 1")


# ------------------------------------------------------------------ dialogs and console


def test_dialogs_answer_as_scripted_and_are_recorded(fake: FakeReaper, tmp_path: Path) -> None:
    fake.message_box_answers.append(7)  # NO
    fake.user_inputs.extend([["htdemucs", "4"], None])
    fake.menu_answers.append(2)
    lua(
        fake,
        tmp_path,
        """
        local a = reaper.ShowMessageBox("Replace?", "daw-bridge", 4)
        local b = reaper.ShowMessageBox("Done", "daw-bridge", 0)
        local ok1, v1 = reaper.GetUserInputs("Split", 2, "Model,Stems,extrawidth=100", "a,2")
        local ok2, v2 = reaper.GetUserInputs("Split", 2, "Model,Stems", "a,2")
        gfx.init("menu", 10, 10)
        local m = gfx.showmenu("one|two")
        reaper.ShowConsoleMsg("line\\n")
        reaper.SetExtState("t", "x", table.concat({a, b, tostring(ok1), v1, tostring(ok2), v2, m},
          "|"), false)
        """,
    )
    assert state(fake, "x") == "7|1|true|htdemucs,4|false||2"
    assert [(m.msg, m.type, m.answer) for m in fake.message_boxes] == [
        ("Replace?", 4, 7),
        ("Done", 0, 1),
    ]
    assert fake.user_input_calls[0] == ("Split", ["Model", "Stems"], ["a", "2"])
    assert fake.menus == [("one|two", 2)]
    assert fake.console_text == "line\n"


def test_an_unscripted_dialog_fails_the_script(fake: FakeReaper, tmp_path: Path) -> None:
    with pytest.raises(LuaScriptError, match=r"no scripted answer"):
        lua(fake, tmp_path, 'reaper.GetUserInputs("Split", 1, "Model", "")')


def test_action_context_and_paths(fake: FakeReaper, tmp_path: Path) -> None:
    lua(
        fake,
        tmp_path,
        """
        local new, path, section, cmd = reaper.get_action_context()
        reaper.SetExtState("t", "ctx", table.concat({tostring(new), path, section}, "|"), false)
        reaper.SetExtState("t", "res", reaper.GetResourcePath(), false)
        reaper.SetExtState("t", "proj", reaper.GetProjectPath(), false)
        local dir = reaper.GetResourcePath() .. "/Data/daw-bridge/x"
        reaper.SetExtState("t", "mk", reaper.RecursiveCreateDirectory(dir, 0), false)
        reaper.SetExtState("t", "fe", tostring(reaper.file_exists(dir)), false)
        """,
    )
    assert state(fake, "ctx") == f"true|{tmp_path / 'script.lua'}|0"
    assert Path(state(fake, "res")).is_dir() and Path(state(fake, "proj")).is_dir()
    assert state(fake, "mk") == "1" and (fake.resource_path / "Data/daw-bridge/x").is_dir()
    assert state(fake, "fe") == "false"  # a directory is not a readable file


def test_time_precise_is_real_monotonic_time(fake: FakeReaper, tmp_path: Path) -> None:
    before = time.monotonic()
    lua(
        fake,
        tmp_path,
        'reaper.SetExtState("t", "now", string.format("%.6f", reaper.time_precise()), 0)',
    )
    assert before <= float(state(fake, "now")) <= time.monotonic()


# ------------------------------------------------------------------ UTF-8


def test_non_ascii_paths_round_trip(fake: FakeReaper, tmp_path: Path) -> None:
    folder = tmp_path / "Stücke – ñandú 音"
    folder.mkdir()
    wav = write_wav(folder / "voix élevée.wav", noise(seconds=0.5))
    (folder / "lib.lua").write_text('return {name = "bibliothèque"}', encoding="utf-8")
    fake.select_items(fake.add_audio_item(fake.add_track("Piste é"), wav))
    lua(
        fake,
        folder,
        """
        local _, me = reaper.get_action_context()
        local lib = dofile(me:match("^(.*[/\\\\])") .. "lib.lua")
        local take = reaper.GetActiveTake(reaper.GetSelectedMediaItem(0, 0))
        local file = reaper.GetMediaSourceFileName(reaper.GetMediaItemTake_Source(take))
        local handle = assert(io.open(file, "rb"))
        handle:close()
        local _, track = reaper.GetTrackName(reaper.GetTrack(0, 0))
        reaper.SetExtState("t", "x", table.concat({me, lib.name, file, track,
          tostring(reaper.file_exists(file))}, "|"), false)
        reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", "voix – 2", true)
        """,
        name="scrïpt ü.lua",
    )
    assert state(fake, "x") == f"{folder / 'scrïpt ü.lua'}|bibliothèque|{wav}|Piste é|true"
    assert fake.items()[0].takes[0].name == "voix – 2"


# ------------------------------------------------------------------ gfx


PROGRESS_UI = """
local progress, cancelled = 0, false
gfx.init("daw-bridge", 300, 100)
local function frame()
  if gfx.getchar() < 0 then
    reaper.SetExtState("t", "end", "closed", false)
    return
  end
  gfx.set(0.2, 0.2, 0.2) ; gfx.rect(0, 0, gfx.w, gfx.h, 1)
  gfx.set(1, 1, 1)
  gfx.x, gfx.y = 10, 10
  gfx.drawstr("vocals " .. progress .. "%")
  local w, h = gfx.measurestr("Cancel")
  gfx.roundrect(200, 60, w + 10, h + 10, 4)
  gfx.x, gfx.y = 205, 65
  gfx.drawstr("Cancel")
  gfx.update()
  if gfx.mouse_cap & 1 == 1 and gfx.mouse_x >= 200 and gfx.mouse_y >= 60 then
    cancelled = true
  end
  if cancelled and gfx.mouse_cap == 0 then
    reaper.SetExtState("t", "end", "cancelled at " .. progress, false)
    gfx.quit()
    return
  end
  progress = math.min(100, progress + 15)
  reaper.defer(frame)
end
frame()
"""


def test_drawn_text_is_recorded_per_frame(fake: FakeReaper, tmp_path: Path) -> None:
    lua(fake, tmp_path, PROGRESS_UI)
    fake.run_defer(until=lambda: "vocals 45%" in fake.drawn_texts(), sleep=0)
    assert fake.frames[0].texts == ["vocals 0%", "Cancel"]
    assert fake.drawn_texts(-1) == ["vocals 45%", "Cancel"]
    cancel = fake.find_text("Cancel")
    assert (cancel.x, cancel.y, cancel.h) == (205, 65, 16)
    assert fake.frames[0].ops[0].op == "rect" and fake.frames[0].ops[0].color[:3] == (0.2,) * 3
    assert fake.window.title == "daw-bridge" and fake.window.open


def test_clicking_a_drawn_button_presses_for_one_frame(fake: FakeReaper, tmp_path: Path) -> None:
    lua(fake, tmp_path, PROGRESS_UI)
    fake.run_defer(max_steps=2, sleep=0)  # frames at 0%, 15%, 30%
    fake.click_text("Cancel")  # pressed while drawing 45%, released at 60%
    fake.run_defer(sleep=0)
    assert state(fake, "end") == "cancelled at 60"
    assert not fake.window.open and fake.running == []


def test_closing_the_window_makes_getchar_return_minus_one(
    fake: FakeReaper, tmp_path: Path
) -> None:
    lua(fake, tmp_path, PROGRESS_UI)
    fake.run_defer(max_steps=1, sleep=0)
    fake.close_window()
    fake.run_defer(sleep=0)
    assert state(fake, "end") == "closed"


def test_keys_reach_getchar_in_order(fake: FakeReaper, tmp_path: Path) -> None:
    lua(
        fake,
        tmp_path,
        """
        gfx.init("k")
        local got = {}
        local function loop()
          local c = gfx.getchar()
          if c == 27 then reaper.SetExtState("t", "keys", table.concat(got, ","), false) return end
          if c > 0 then got[#got + 1] = utf8.char(c) end
          reaper.defer(loop)
        end
        loop()
        """,
    )
    for key in ("a", "b", 27):
        fake.press_key(key)
    fake.run_defer(sleep=0)
    assert state(fake, "keys") == "a,b"


# ------------------------------------------------------------------ project tabs


def test_project_tabs_enumerate_switch_and_close(fake: FakeReaper, tmp_path: Path) -> None:
    home = fake.project
    fake.add_empty_item(fake.add_track("Home"))
    other = fake.new_project_tab()
    assert fake.project is other
    lua(
        fake,
        tmp_path,
        """
        local home = reaper.EnumProjects(0)
        local item = reaper.GetTrackMediaItem(reaper.GetTrack(home, 0), 0)
        local mine = reaper.GetItemProjectContext(item)
        -- InsertTrackInProject works on any tab; InsertTrackAtIndex on the active one.
        reaper.InsertTrackInProject(mine, 1, 0)
        reaper.InsertTrackAtIndex(0, false)
        local values = { tostring(mine == home), tostring(reaper.EnumProjects(-1) == home),
          tostring(reaper.EnumProjects(2) == nil),
          tostring(reaper.ValidatePtr2(0, item, "MediaItem*")),
          tostring(reaper.ValidatePtr2(home, item, "MediaItem*")) }
        reaper.SelectProjectInstance(home)
        values[#values + 1] = tostring(reaper.EnumProjects(-1) == home)
        reaper.SetExtState("t", "v", table.concat(values, "|"), false)
        """,
    )
    assert state(fake, "v") == "true|false|true|false|true|true"
    assert len(home.tracks) == 2 and len(other.tracks) == 1
    fake.close_project_tab(home)
    assert fake.projects == [other] and fake.project is other
    # A script that kept the closed tab's pointer: ValidatePtr says so, using it is an error.
    fake.register("reaper.EnumProjects", lambda idx: (home, ""))
    code = """
    local closed = reaper.EnumProjects(0)
    reaper.SetExtState("t", "gone", tostring(reaper.ValidatePtr2(0, closed, "ReaProject*")), false)
    reaper.CountTracks(closed)
    """
    with pytest.raises(LuaScriptError, match=r"closed project"):
        lua(fake, tmp_path, code)
    assert state(fake, "gone") == "false"


def test_timemap_uses_the_given_projects_tempo(fake: FakeReaper, tmp_path: Path) -> None:
    fake.project.bpm = 90.0
    other = fake.new_project_tab()
    other.bpm = 120.0
    fake.select_project(fake.projects[0])
    lua(
        fake,
        tmp_path,
        """
        local qn = reaper.TimeMap2_timeToQN(reaper.EnumProjects(1), 3.0)
        local t = reaper.TimeMap2_QNToTime(0, 3.0)
        reaper.SetExtState("t", "v", qn .. "|" .. t, false)
        """,
    )
    assert state(fake, "v") == "6.0|2.0"


# ------------------------------------------------------------------ take FX, envelopes, markers


def _audio_take(fake: FakeReaper, tmp_path: Path):
    wav = write_wav(tmp_path / "a.wav", noise(seconds=4.0))
    item = fake.add_audio_item(fake.add_track("A"), wav, 0.0, 2.0, startoffs=1.0)
    fake.add_empty_take(item, active=False)
    return item, item.takes[0], item.takes[1]


def test_take_fx_are_copied_and_fx_envelopes_created(fake: FakeReaper, tmp_path: Path) -> None:
    _, take, other = _audio_take(fake, tmp_path)
    fake.add_take_fx(take, "VST: ReaEQ", [0.1, 0.2])
    fake.add_take_fx(take, "JS: Gain", [0.5])
    fake.add_fx_envelope(take, 1, 0, [(0.0, 0.25), (1.0, 0.75)])
    lua(
        fake,
        tmp_path,
        """
        local item = reaper.GetTrackMediaItem(reaper.GetTrack(0, 0), 0)
        local src, dest = reaper.GetTake(item, 0), reaper.GetTake(item, 1)
        for fx = 0, reaper.TakeFX_GetCount(src) - 1 do
          reaper.TakeFX_CopyToTake(src, fx, dest, fx, false)
        end
        local before = reaper.TakeFX_GetEnvelope(dest, 1, 0, false)
        local env = reaper.TakeFX_GetEnvelope(dest, 1, 0, true)
        local _, chunk = reaper.GetEnvelopeStateChunk(reaper.GetTakeEnvelope(src, 0), "", false)
        local ok = reaper.SetEnvelopeStateChunk(env, chunk, false)
        local wrong = reaper.SetEnvelopeStateChunk(env, "<VOLENV\\n>", false)
        local _, name = reaper.TakeFX_GetFXName(dest, 1)
        reaper.SetExtState("t", "v", table.concat({tostring(before), tostring(ok), tostring(wrong),
          name, reaper.CountTakeEnvelopes(dest)}, "|"), false)
        """,
    )
    assert state(fake, "v") == "nil|true|false|JS: Gain|1"
    assert other.describe()["fx"] == take.describe()["fx"]
    assert other.describe()["envelopes"] == take.describe()["envelopes"]
    assert take.fx and take.fx is not other.fx  # a copy, not a move


def test_built_in_take_envelopes_come_only_from_an_item_chunk(
    fake: FakeReaper, tmp_path: Path
) -> None:
    item, take, other = _audio_take(fake, tmp_path)
    fake.add_take_envelope(take, "Volume", [(0.0, 1.0), (0.5, 0.5)])
    block = take.envelope("Volume").chunk()
    chunk = fake._item_chunk(item)
    assert block in chunk and "<SOURCE WAVE" in chunk
    assert fake._GetTakeEnvelopeByName(other, "Volume") is None
    # After the second take's source block, as REAPER writes take envelopes.
    lines = chunk.splitlines()
    end = len(lines) - 1
    lines[end:end] = [line for line in block.splitlines() if not line.startswith("EGUID")]
    assert fake._SetItemStateChunk(item, "\n".join(lines), False)
    copied = fake._GetTakeEnvelopeByName(other, "Volume")
    assert copied is not None and copied.points == take.envelope("Volume").points
    assert copied.guid != take.envelope("Volume").guid and fake.problems == []
    assert not fake._SetItemStateChunk(item, "<ITEM\nPOSITION 0\n", False)  # unbalanced
    with pytest.raises(ReaperError, match="only take envelope blocks"):
        fake._SetItemStateChunk(item, chunk.replace("POSITION 0", "POSITION 5"), False)


def test_stretch_markers_add_update_and_slope_as_documented(
    fake: FakeReaper, tmp_path: Path
) -> None:
    _, take, _ = _audio_take(fake, tmp_path)
    lua(
        fake,
        tmp_path,
        """
        local take = reaper.GetTake(reaper.GetTrackMediaItem(reaper.GetTrack(0, 0), 0), 0)
        local a = reaper.SetTakeStretchMarker(take, -1, 1.0, 2.5)
        local b = reaper.SetTakeStretchMarker(take, -1, 0.5)      -- source auto-calculated
        local again = reaper.SetTakeStretchMarker(take, -1, 1.0, 3.0) -- one exists there
        local moved = reaper.SetTakeStretchMarker(take, 1, 1.2)   -- idx >= 0 updates
        local slope = reaper.SetTakeStretchMarkerSlope(take, 0, 0.4)
        local none = reaper.SetTakeStretchMarkerSlope(take, 5, 0.4)
        local idx, pos, src = reaper.GetTakeStretchMarker(take, 1)
        local bad = reaper.GetTakeStretchMarker(take, 2)
        reaper.SetExtState("t", "v", table.concat({a, b, again, moved, tostring(slope),
          tostring(none), idx, pos, src, bad, reaper.GetTakeStretchMarkerSlope(take, 0),
          reaper.GetTakeNumStretchMarkers(take)}, "|"), false)
        """,
    )
    # Source at 0.5 s before any other marker: rate 1 back from the marker at (1.0, 2.5).
    assert state(fake, "v") == "0|0|-1|1|true|false|1|1.2|2.5|-1|0.4|2"
    assert take.stretch_markers == [[0.5, 2.0, 0.4], [1.2, 2.5, 0.0]]
