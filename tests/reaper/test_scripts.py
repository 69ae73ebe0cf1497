"""The real Lua actions, run in Lua 5.4 against the fake REAPER, with a real server.

Each test installs the scripts with ``daw-bridge install-reaper`` into the fake's
resource folder, builds a project, runs an action and drives ``reaper.defer``
until the shim is done, as REAPER would. ExecProcess really starts
``daw-bridge reaper run``, which talks to a real server on 127.0.0.1.
"""

from __future__ import annotations

import copy
import shlex
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from daw_bridge.audio.io import read_span
from daw_bridge.reaper import keyvalue
from daw_bridge.reaper.actions import ACTIONS
from daw_bridge.reaper.install import install
from tests.conftest import free_port, noise, write_wav
from tests.reaper.conftest import configure
from tests.reaper.fake_reaper import FakeReaper

SPLIT = ACTIONS[0].file
TWO_STEMS = ACTIONS[1].file
SETTINGS = ACTIONS[5].file
STEMS = ["Drums", "Bass", "Other", "Vocals"]


@pytest.fixture
def reaper(tmp_path):
    # Spaces, quotes and non-ASCII in the resource folder: paths the shim must quote.
    with FakeReaper(tmp_path / "REAPER Résumé 'x'") as fake:
        install(fake.resource_path)
        yield fake


def run_action(reaper: FakeReaper, action: str, timeout: float = 120) -> None:
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / action)
    reaper.run_defer(timeout=timeout)


@pytest.fixture
def source(tmp_path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    return write_wav(folder / 'drum "loop" é.wav', noise(seconds=10.0, seed=7), 44100)


def stem_items(reaper: FakeReaper, stem: str):
    return sorted(reaper.find_track(stem).items, key=lambda item: item.position)


def test_split_inserts_aligned_stems_of_exactly_the_played_span_in_one_undo_point(
    reaper, server, source
) -> None:
    configure(reaper, server.address)
    guitar = reaper.add_track("Guitar")
    first = reaper.add_audio_item(guitar, source, 5.0, 2.0, startoffs=3.2, take_name="riff")
    second = reaper.add_audio_item(
        guitar,
        source,
        10.0,
        2.0,
        startoffs=1.0,
        playrate=1.5,
        take_name="fast",
        take_values={"B_PPITCH": 1, "D_PITCH": -2, "I_CHANMODE": 3, "D_VOL": 0.5},
        fadein=0.1,
        fadeout=0.25,
    )
    reaper.select_items(first, second)
    before = [copy.deepcopy(item.describe()) for item in (first, second)]

    run_action(reaper, SPLIT)

    assert reaper.message_boxes == []
    assert reaper.track_tree() == ["Guitar", "Guitar stems", *(f"  {s}" for s in STEMS)]
    assert reaper.undo_history == ["daw-bridge: insert stems"]
    assert reaper.changes_outside_undo == [] and reaper.problems == []
    assert [item.describe() for item in (first, second)] == before  # originals untouched
    for original, start, seconds, index in ((first, 3.2, 2.0, 0), (second, 1.0, 3.0, 1)):
        span = read_span(source, start, seconds).samples
        total = np.zeros_like(span)
        for stem in STEMS:
            item = stem_items(reaper, stem)[index]
            take = item.active_take
            assert item.position == original.position and item.length == original.length
            for name in ("D_FADEINLEN", "D_FADEOUTLEN", "D_VOL"):
                assert item.get(name) == original.get(name)
            for name in ("D_PLAYRATE", "B_PPITCH", "D_PITCH", "I_CHANMODE", "D_VOL"):
                assert take.get(name) == original.active_take.get(name)
            assert take.startoffs == 0.0
            path = Path(take.source.filename)
            assert path.is_relative_to(reaper.resource_path.parent / "project")
            audio = read_span(path).samples
            assert audio.shape == span.shape  # sample-exact length
            total += audio
        # Stems sum to the span: any offset of even one sample would leave noise behind.
        np.testing.assert_allclose(total, span, atol=1e-5)
    colours = {reaper.find_track(stem).color for stem in STEMS}
    assert len(colours) == len(STEMS) and 0 not in colours


def test_items_from_one_track_share_stems_and_each_track_gets_its_own(
    reaper, server, source
) -> None:
    configure(reaper, server.address, colors="0", mute_original="1")
    reaper.add_track("Band", folder_depth=1)
    keys = reaper.add_track("Keys")
    bass = reaper.add_track("Bass gtr", folder_depth=-1)  # last track in the folder
    after = reaper.add_track("After")
    items = [
        reaper.add_audio_item(keys, source, 0.0, 1.0),
        reaper.add_audio_item(keys, source, 4.0, 1.0, startoffs=2.0),
        reaper.add_audio_item(bass, source, 1.0, 1.0),
    ]
    reaper.select_items(*items)

    run_action(reaper, TWO_STEMS)

    assert reaper.track_tree() == [
        "Band",
        "  Keys",
        "  Keys stems",
        "    Vocals",
        "    Instrumental",
        "  Bass gtr",
        "  Bass gtr stems",
        "    Vocals",
        "    Instrumental",
        "After",
    ]
    summary = {row["index"]: row for row in reaper.track_summary()}
    assert summary[after.index]["parent"] is None
    keys_vocals, bass_vocals = [t for t in reaper.project.tracks if t.name == "Vocals"]
    assert len(keys_vocals.items) == 2 and len(bass_vocals.items) == 1
    assert {t.color for t in reaper.project.tracks} == {0}
    assert len(reaper.undo_points) == 1
    assert all(item.get("B_MUTE") == 1 for item in items)  # as asked in Settings


def test_midi_and_empty_items_are_skipped_with_a_message(reaper, server, source) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("Mixed")
    midi = reaper.add_midi_item(track, 0.0, 2.0)
    empty = reaper.add_empty_item(track, 3.0, 1.0)
    reaper.select_items(midi, empty)
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SPLIT)
    (box,) = reaper.message_boxes
    assert "Select one or more audio items" in box.msg and "MIDI item" in box.msg
    assert reaper.track_tree() == ["Mixed"] and reaper.exec_calls == []


def test_a_reversed_take_is_refused_and_the_other_items_are_split(reaper, server, source) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("T")
    good = reaper.add_audio_item(track, source, 0.0, 1.0)
    reversed_item = reaper.add_section_item(
        track, source, 2.0, 1.0, section_offset=1.0, section_length=3.0, reverse=True
    )
    reaper.select_items(good, reversed_item)
    run_action(reaper, SPLIT)
    (box,) = reaper.message_boxes
    assert "reversed" in box.msg and "Glue" in box.msg
    assert len(reaper.find_track("Vocals").items) == 1


def test_server_down_gives_a_clear_message_and_inserts_nothing(reaper, source) -> None:
    configure(reaper, f"tcp://127.0.0.1:{free_port()}")
    track = reaper.add_track("T")
    reaper.select_items(reaper.add_audio_item(track, source, 0.0, 1.0))
    run_action(reaper, SPLIT)
    (box,) = reaper.message_boxes
    assert "server is not running" in box.msg and "daw-bridge serve" in box.msg
    assert reaper.track_tree() == ["T"] and reaper.undo_points == []


def test_cancel_stops_the_split_and_inserts_nothing(reaper, server, tmp_path) -> None:
    long_song = write_wav(tmp_path / "long.wav", noise(seconds=60.0, seed=1), 44100)
    configure(reaper, server.address)
    track = reaper.add_track("T")
    reaper.select_items(reaper.add_audio_item(track, long_song, 0.0, 60.0))
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SPLIT)
    reaper.run_defer(until=lambda: any("running" in t for t in reaper.drawn_texts()), timeout=60)
    started = time.monotonic()
    reaper.click_text("Cancel")
    reaper.run_defer(timeout=60)
    assert time.monotonic() - started < 10
    assert reaper.message_boxes == [] and reaper.undo_points == []
    assert reaper.track_tree() == ["T"]
    assert not list((reaper.resource_path.parent / "project").rglob("*.wav"))


def test_the_progress_window_shows_each_item(reaper, server, source) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("T")
    reaper.select_items(reaper.add_audio_item(track, source, 0.0, 1.0, take_name="hook"))
    run_action(reaper, SPLIT)
    texts = reaper.drawn_texts()
    assert any(t.startswith("hook: ") and t.endswith("%") for t in texts)
    assert "Cancel" in texts


def test_midi_for_stems_lands_on_tracks_below_the_stems(reaper, server, source) -> None:
    configure(reaper, server.address, midi="drums,bass")
    reaper.project.bpm = 93.0
    track = reaper.add_track("Song")
    original = reaper.add_audio_item(track, source, 2.0, 3.0, startoffs=0.5)
    reaper.select_items(original)
    run_action(reaper, SPLIT)
    assert reaper.track_tree()[-2:] == ["  Drums MIDI", "  Bass MIDI"]
    (drums_midi,) = reaper.find_track("Drums MIDI").items
    assert drums_midi.position == 2.0 and drums_midi.length == 3.0
    assert drums_midi.active_take.source.type == "MIDI"
    midi_file = Path(drums_midi.active_take.source.filename)
    assert midi_file.suffix == ".mid"
    # Written at the project's tempo, so notes placed by beats still line up with the audio.
    tempi = [m.tempo for m in mido.MidiFile(midi_file).tracks[0] if m.type == "set_tempo"]
    assert [round(mido.tempo2bpm(t), 3) for t in tempi] == [93.0]


OTHER_SETTINGS = 3  # the Settings menu's line after the two model pick lists


def test_settings_are_kept_with_ext_state(reaper) -> None:
    reaper.menu_answers.append(OTHER_SETTINGS)
    reaper.user_inputs.append("tcp://127.0.0.1:6000|/tmp/stems|2|0|1|1|drums|vocals")
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SETTINGS)
    assert reaper.menus[-1][0].split("|")[OTHER_SETTINGS - 1] == "Other settings..."
    state = {key: value for (section, key), value in reaper.persistent_ext_state.items()}
    assert state["address"] == "tcp://127.0.0.1:6000"
    assert "model" not in state and state["out_dir"] == "/tmp/stems"
    assert (state["stem_set"], state["autostart"], state["mute_original"]) == ("2", "0", "1")
    assert state["midi"] == "drums" and state["keep"] == "vocals"


def test_settings_show_one_caption_per_field_as_reaper_splits_them(reaper) -> None:
    """REAPER splits GetUserInputs' captions at every comma: a comma in a caption
    shifts every later label onto the wrong field (issue 15)."""
    reaper.menu_answers.append(OTHER_SETTINGS)
    reaper.user_inputs.append("tcp://127.0.0.1:6000|/tmp/stems|2|0|1|1|drums bass|vocals")
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SETTINGS)

    (_title, captions, defaults) = reaper.user_input_calls[-1]
    assert len(captions) == len(defaults) == 8
    assert captions[2].startswith("Stems with presets") and captions[6].startswith("MIDI for")
    assert captions[7].startswith("Stems to keep")
    state = {key: value for (section, key), value in reaper.persistent_ext_state.items()}
    assert state["midi"] == "drums bass" and state["keep"] == "vocals"


def test_not_installed_says_how_to_install(tmp_path) -> None:
    with FakeReaper(tmp_path) as reaper:
        install(reaper.resource_path)
        (reaper.resource_path / "Data" / "daw-bridge" / "daw-bridge.conf").unlink()
        track = reaper.add_track("T")
        reaper.select_items(reaper.add_empty_item(track, 0.0, 1.0))
        reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SPLIT)
        (box,) = reaper.message_boxes
        assert "daw-bridge install-reaper" in box.msg


def test_the_client_command_is_quoted_for_paths_with_spaces_and_non_ascii(reaper) -> None:
    lua = reaper._new_lua()
    quote = lua.execute(
        (Path(__file__).resolve().parents[2] / "reaper_scripts" / "daw_bridge_lib.lua")
        .read_text()
        .replace("return M\n", "return M.quote\n")
        .encode()
    )
    odd = "/Users/Zoë Müller/REAPER Media/it's here/request.txt"
    windows = "C:\\Program Files\\Python 3\\python.exe"
    arguments = ["/opt/py 3/python", "-m", odd, windows]
    command = b" ".join(quote(arg.encode()) for arg in arguments)
    # Off Windows, REAPER splits the command into words as a POSIX shell does (the fake: shlex).
    assert shlex.split(command.decode()) == arguments
    for bad in ['/a "b"/c', "/a/$HOME", "C:\\ends\\"]:
        with pytest.raises(Exception, match="cannot pass this path"):
            quote(bad.encode())


def test_split_with_preset_inserts_processed_stems_and_keeps_the_raw_ones(
    reaper, server, source
) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("Loop")
    reaper.select_items(reaper.add_audio_item(track, source, 1.0, 2.0))
    reaper.menu_answers.append(lambda menu: menu.split("|").index("karaoke") + 1)
    run_action(reaper, ACTIONS[3].file)
    assert reaper.message_boxes == []
    assert reaper.track_tree()[1] == "Loop stems - karaoke"
    (vocals,) = reaper.find_track("Vocals").items
    processed = Path(vocals.active_take.source.filename)
    assert processed.parent.name == "karaoke"
    assert (processed.parent.parent / "vocals.wav").is_file()  # the raw stem stays
    assert np.abs(read_span(processed).samples).max() == 0.0  # karaoke mutes the vocals


def test_apply_preset_to_stems_reprocesses_without_separating_again(reaper, server, source) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("Loop")
    reaper.select_items(reaper.add_audio_item(track, source, 1.0, 2.0))
    run_action(reaper, SPLIT)
    drums_item = reaper.find_track("Drums").items[0]
    vocals_item = reaper.find_track("Vocals").items[0]
    reaper.select_items(drums_item, vocals_item)  # two stems of one job: one request
    reaper.menu_answers.append(lambda menu: menu.split("|").index("lofi-drums") + 1)
    run_action(reaper, ACTIONS[4].file)
    assert reaper.message_boxes == []
    assert reaper.track_tree() == [
        "Loop",
        "Loop stems - lofi-drums",
        *(f"  {s}" for s in STEMS),
        "Loop stems",
        *(f"  {s}" for s in STEMS),
    ]
    assert len(reaper.undo_points) == 2
    request = keyvalue.read(Path(shlex.split(reaper.exec_calls[-1].cmdline)[-1]))
    assert request["items"] == "1" and request["mode"] == "apply"
    new_drums, old_drums = (t for t in reaper.project.tracks if t.name == "Drums")
    new_file = Path(new_drums.items[0].active_take.source.filename)
    old_file = Path(old_drums.items[0].active_take.source.filename)
    assert new_drums.items[0].position == drums_item.position
    # Processed from the first split's raw stems, in a subfolder beside them.
    assert new_file.parent.name == "lofi-drums" and new_file.parent.parent == old_file.parent
    assert not np.array_equal(read_span(new_file).samples, read_span(old_file).samples)


@pytest.mark.parametrize(("os_name", "timeout"), [("Win64", -2), ("OSX64", -1), ("Other", -1)])
def test_the_client_starts_in_the_background_without_a_console_window(
    tmp_path, server, source, os_name: str, timeout: int
) -> None:
    with FakeReaper(tmp_path, os_name=os_name) as reaper:
        install(reaper.resource_path)
        configure(reaper, server.address)
        track = reaper.add_track("T")
        reaper.select_items(reaper.add_audio_item(track, source, 0.0, 0.5))
        run_action(reaper, SPLIT)
        (call,) = reaper.exec_calls
        assert call.timeoutmsec == timeout  # -1: no wait; -2: no wait, minimized
        assert len(reaper.find_track("Vocals").items) == 1


def test_a_later_click_on_the_same_track_adds_to_its_stem_tracks(reaper, server, source) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("Keys")
    first = reaper.add_audio_item(track, source, 0.0, 1.0)
    second = reaper.add_audio_item(track, source, 4.0, 1.0, startoffs=2.0)
    reaper.select_items(first)
    run_action(reaper, SPLIT)
    reaper.select_items(second)
    run_action(reaper, SPLIT)
    assert reaper.track_tree() == ["Keys", "Keys stems", *(f"  {s}" for s in STEMS)]
    assert [item.position for item in stem_items(reaper, "Vocals")] == [0.0, 4.0]
    assert len(reaper.undo_points) == 2  # one per click
    reaper.select_items(first)  # a preset is another set of tracks
    reaper.menu_answers.append(lambda menu: menu.split("|").index("karaoke") + 1)
    run_action(reaper, ACTIONS[3].file)
    assert reaper.track_tree()[1] == "Keys stems - karaoke"
    assert reaper.track_tree().count("Keys stems") == 1


def test_a_python_that_cannot_start_is_reported_at_once(reaper, source) -> None:
    """REAPER's ExecProcess returns nil when the program cannot start (issue 15)."""
    conf = reaper.resource_path / "Data" / "daw-bridge" / "daw-bridge.conf"
    values = keyvalue.read(conf)
    values["arg.1"] = str(reaper.resource_path / "gone-venv" / "python")
    keyvalue.write(conf, values)
    track = reaper.add_track("T")
    reaper.select_items(reaper.add_audio_item(track, source, 0.0, 1.0))
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SPLIT)
    reaper.run_defer(timeout=5)
    (box,) = reaper.message_boxes
    assert "could not start Python" in box.msg and "gone-venv" in box.msg
    assert "install-reaper" in box.msg and "daw-bridge.conf" in box.msg


def test_a_runner_that_dies_is_reported_and_its_job_cancelled(reaper, server, tmp_path) -> None:
    long_song = write_wav(tmp_path / "long.wav", noise(seconds=60.0, seed=1), 44100)
    configure(reaper, server.address)
    track = reaper.add_track("T")
    reaper.select_items(reaper.add_audio_item(track, long_song, 0.0, 60.0))
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SPLIT)
    reaper.run_defer(until=lambda: any("running" in t for t in reaper.drawn_texts()), timeout=60)
    reaper.background[0].popen.kill()  # as if the system killed it
    reaper.run_defer(timeout=30)
    (box,) = reaper.message_boxes
    assert "stopped without finishing" in box.msg and "log.txt" in box.msg
    assert reaper.undo_points == [] and reaper.track_tree() == ["T"]
    cleanup = reaper.background[1]
    assert cleanup.argv[-2:-1] == ["cancel"]
    assert cleanup.popen.wait(timeout=30) == 1, cleanup.output()
    assert not list((reaper.resource_path.parent / "project").rglob("*.wav"))


@pytest.mark.parametrize("finished", [1, 2])
def test_cancel_after_some_items_finished_inserts_nothing_and_removes_their_stems(
    reaper, server, source, tmp_path, finished: int
) -> None:
    """Cancel means the whole click: no item is inserted, no stem file of it stays."""
    long_song = write_wav(tmp_path / "long.wav", noise(seconds=60.0, seed=1), 44100)
    configure(reaper, server.address)
    track = reaper.add_track("T")
    short = [
        reaper.add_audio_item(track, source, 2.0 * i, 1.0, take_name=f"short{i}")
        for i in range(finished)
    ]
    reaper.select_items(*short, reaper.add_audio_item(track, long_song, 10.0, 60.0))
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SPLIT)
    last = f"short{finished - 1}: done"
    reaper.run_defer(until=lambda: any(t.startswith(last) for t in reaper.drawn_texts()))
    assert list((reaper.resource_path.parent / "project").rglob("*.wav"))
    reaper.click_text("Cancel")
    reaper.run_defer(timeout=60)
    assert reaper.message_boxes == [] and reaper.undo_points == []
    assert reaper.track_tree() == ["T"]
    assert not list((reaper.resource_path.parent / "project").rglob("*.wav"))


def test_one_unreadable_status_read_after_30_s_does_not_abandon_a_live_job(
    reaper, server, tmp_path
) -> None:
    """On Windows a read can fail while the runner replaces the file: that read is skipped."""
    song = write_wav(tmp_path / "song.wav", noise(seconds=20.0, seed=2), 44100)
    configure(reaper, server.address)
    track = reaper.add_track("T")
    reaper.select_items(reaper.add_audio_item(track, song, 0.0, 20.0))
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / SPLIT)
    reaper.run_defer(until=lambda: any("running" in t for t in reaper.drawn_texts()), timeout=60)
    reaper.clock_offset = 60.0  # past the 30 s the script waits for a first status
    (run,) = reaper.running
    run.lua.execute(
        "local real, failed = io.open, false\n"
        "io.open = function(path, mode)\n"
        '  if not failed and path:match("status%.txt$") and (mode or "r"):match("r") then\n'
        "    failed = true\n"
        '    return nil, "The process cannot access the file: it is being used"\n'
        "  end\n"
        "  return real(path, mode)\n"
        "end"
    )
    reaper.run_defer(timeout=120)
    assert reaper.message_boxes == []
    assert len(reaper.undo_points) == 1 and len(stem_items(reaper, "Vocals")) == 1
