"""Stems play where and how the original did (issue 15, points 4 and 5).

The real Lua actions run against the fake REAPER with a real server, as in
test_scripts.py: take FX, take envelopes, pan, stretch markers and stretch mode
follow the stems; what cannot follow is said per item before the split starts;
a repeated split replaces its earlier stems; stems land in the item's project
tab whichever tab is active; "Stems to keep" reaches the server.
"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import numpy as np
import pytest

from daw_bridge.audio.io import read_span
from daw_bridge.reaper import keyvalue
from daw_bridge.reaper.actions import ACTIONS
from tests.conftest import noise, write_wav
from tests.reaper.conftest import configure
from tests.reaper.fake_reaper import FakeReaper

SPLIT = ACTIONS[0].file
STEMS = ["Drums", "Bass", "Other", "Vocals"]


@pytest.fixture
def source(tmp_path) -> Path:
    return write_wav(tmp_path / "song.wav", noise(seconds=10.0, seed=11), 44100)


def start(reaper: FakeReaper, action: str = SPLIT) -> None:
    reaper.run_script(reaper.resource_path / "Scripts" / "daw-bridge" / action)


def split(reaper: FakeReaper, action: str = SPLIT) -> None:
    start(reaper, action)
    reaper.run_defer(timeout=120)


def request_of(reaper: FakeReaper) -> dict[str, str]:
    return keyvalue.read(Path(shlex.split(reaper.exec_calls[-1].cmdline)[-1]))


def test_stems_take_over_take_fx_envelopes_pan_stretch_markers_and_stretch_mode(
    reaper, server, source
) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("Song")
    take_values = {"D_PAN": -0.4, "D_PANLAW": 0.5, "I_STRETCHFLAGS": 4, "I_PITCHMODE": 0x90002,
                   "F_STRETCHFADESIZE": 0.01, "D_PITCH": 1.0}  # fmt: skip
    item = reaper.add_audio_item(
        track, source, 4.0, 2.0, startoffs=3.0, take_values=take_values,
        values={"C_BEATATTACHMODE": 1, "C_AUTOSTRETCH": 1, "D_SNAPOFFSET": 0.25},
    )  # fmt: skip
    take = item.active_take
    reaper.add_take_fx(take, "VST: ReaEQ (Cockos)", [0.2, 0.7])
    reaper.add_take_fx(take, "JS: Saturation", [0.9])
    reaper.add_take_envelope(take, "Volume", [(0.0, 1.0), (1.5, 0.25)])
    reaper.add_take_envelope(take, "Pitch", [(0.5, -2.0)])
    reaper.add_fx_envelope(take, 1, 0, [(0.0, 0.1), (2.0, 0.8)])
    # Markers that play 2.4 s of source in the 2 s item: the span reaches 5.4 s, not 5.0 s.
    reaper.add_stretch_marker(take, 0.0, 3.0)
    reaper.add_stretch_marker(take, 1.0, 4.2, slope=0.3)
    reaper.add_stretch_marker(take, 2.0, 5.4)
    reaper.select_items(item)
    before = copy.deepcopy(item.describe())

    split(reaper)

    assert reaper.message_boxes == [] and reaper.problems == []
    assert reaper.undo_history == ["daw-bridge: insert stems"]
    assert item.describe() == before  # the original keeps everything
    span = read_span(source, 3.0, 2.4).samples
    total = np.zeros_like(span)
    for stem in STEMS:
        (stem_item,) = reaper.find_track(stem).items
        stem_take = stem_item.active_take
        for name in ("C_BEATATTACHMODE", "C_AUTOSTRETCH", "D_SNAPOFFSET", "D_POSITION"):
            assert stem_item.get(name) == item.get(name), name
        for name, value in take_values.items():
            assert stem_take.get(name) == value, name
        assert stem_take.startoffs == 0.0
        assert [fx["name"] for fx in stem_take.fx] == ["VST: ReaEQ (Cockos)", "JS: Saturation"]
        assert [fx["params"] for fx in stem_take.fx] == [[0.2, 0.7], [0.9]]
        envelopes = stem_take.describe()["envelopes"]
        assert envelopes == before["takes"][0]["envelopes"]
        assert set(envelopes) == {"Volume", "Pitch", "Param 1 / JS: Saturation"}
        assert {e.guid for e in stem_take.envelopes}.isdisjoint({e.guid for e in take.envelopes})
        # Same item positions, source positions moved back by where the stem file starts.
        markers = [value for marker in stem_take.stretch_markers for value in marker]
        assert markers == pytest.approx([0.0, 0.0, 0.0, 1.0, 1.2, 0.3, 2.0, 2.4, 0.0])
        audio = read_span(Path(stem_take.source.filename)).samples
        assert audio.shape == span.shape
        total += audio
    np.testing.assert_allclose(total, span, atol=1e-5)


def test_what_cannot_follow_is_listed_per_item_before_the_split_starts(
    reaper, server, source
) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("Song")
    edited = reaper.add_audio_item(track, source, 0.0, 1.0, take_name="edited")
    edited.active_take.values["IP_SPECEDIT:CNT"] = 2.0  # spectral edits made in REAPER
    layered = reaper.add_audio_item(track, source, 2.0, 1.0, take_name="layered",
                                    values={"B_ALLTAKESPLAY": 1})  # fmt: skip
    reaper.add_take(layered, reaper.make_source(source), name="second", active=False)
    plain = reaper.add_audio_item(track, source, 4.0, 1.0, take_name="plain")
    reaper.select_items(edited, layered, plain)
    reaper.message_box_answers.append(2)  # Cancel

    start(reaper)

    (box,) = reaper.message_boxes
    assert box.type == 1  # OK / Cancel
    lines = box.msg.splitlines()
    assert any(line.startswith("edited") and "2 spectral edit" in line for line in lines)
    assert any(line.startswith("layered") and "other takes" in line for line in lines)
    assert not any(line.startswith("plain") for line in lines)
    assert reaper.exec_calls == [] and reaper.running == []  # nothing started

    seen: list[int] = []  # how many processes had started when the question came

    def answer(msg: str, title: str, kind: int) -> int:
        seen.append(len(reaper.exec_calls))
        return 1  # OK: split anyway

    reaper.register("reaper.ShowMessageBox", answer)
    split(reaper)
    assert seen == [0]
    assert len(reaper.find_track("Vocals").items) == 3


def test_a_repeated_split_of_an_item_replaces_its_earlier_stems(reaper, server, source) -> None:
    configure(reaper, server.address)
    track = reaper.add_track("Keys")
    first = reaper.add_audio_item(track, source, 0.0, 1.0)
    other = reaper.add_audio_item(track, source, 3.0, 1.0, startoffs=2.0)
    reaper.select_items(first, other)
    split(reaper)
    earlier = {item.active_take.source.filename for item in reaper.find_track("Vocals").items}
    reaper.select_items(first)

    split(reaper)

    assert reaper.track_tree() == ["Keys", "Keys stems", *(f"  {s}" for s in STEMS)]
    for stem in STEMS:
        items = sorted(reaper.find_track(stem).items, key=lambda item: item.position)
        assert [item.position for item in items] == [0.0, 3.0]  # one per source item
        assert items[0].ext["daw_bridge_source"] == first.guid
        assert items[1].ext["daw_bridge_source"] == other.guid
    now = {item.active_take.source.filename for item in reaper.find_track("Vocals").items}
    assert len(now - earlier) == 1 and len(earlier - now) == 1  # the first item's, renewed
    assert all(Path(name).is_file() for name in earlier)  # files stay: undo brings them back
    assert len(reaper.undo_points) == 2


def test_stems_land_in_the_items_project_when_another_tab_is_active(reaper, server, source) -> None:
    configure(reaper, server.address)
    home = reaper.project
    track = reaper.add_track("Song")
    reaper.select_items(reaper.add_audio_item(track, source, 1.0, 2.0))
    start(reaper)
    other = reaper.new_project_tab()  # the user opens another tab during the split
    other_track = reaper.add_track("Elsewhere")
    assert reaper.project is other

    reaper.run_defer(timeout=120)

    assert reaper.message_boxes == []
    assert [t.name for t in other.tracks] == ["Elsewhere"] and other_track.items == []
    assert [t.name for t in home.tracks] == ["Song", "Song stems", *STEMS]
    assert len(home.tracks[-1].items) == 1
    (point,) = reaper.undo_points
    assert point.project is home
    assert reaper.project is other  # the user's tab stays active


def test_a_closed_project_tab_is_reported_and_nothing_is_inserted(reaper, server, source) -> None:
    configure(reaper, server.address)
    home = reaper.project
    track = reaper.add_track("Song")
    reaper.select_items(reaper.add_audio_item(track, source, 1.0, 2.0))
    start(reaper)
    other = reaper.new_project_tab()
    reaper.close_project_tab(home)

    reaper.run_defer(timeout=120)

    (box,) = reaper.message_boxes
    assert "was closed" in box.msg and "nothing was inserted" in box.msg
    folder = box.msg.splitlines()[-1]
    assert Path(folder, "vocals.wav").is_file()  # said where the stems are
    assert other.tracks == [] and reaper.undo_points == []


def test_stems_to_keep_from_settings_go_into_the_request(reaper, source) -> None:
    reaper.ext_state[("daw-bridge", "keep")] = "drums bass"
    reaper.ext_state[("daw-bridge", "autostart")] = "0"
    reaper.ext_state[("daw-bridge", "address")] = "tcp://127.0.0.1:9"
    track = reaper.add_track("T")
    reaper.select_items(reaper.add_audio_item(track, source, 0.0, 1.0))
    split(reaper)
    assert request_of(reaper)["keep"] == "drums bass"


def test_kept_stems_and_rest_are_inserted_and_sum_to_the_item(reaper, server, source) -> None:
    """Needs the server's `keep` option (issue 15, point 5, server half)."""
    configure(reaper, server.address, keep="vocals")
    track = reaper.add_track("Song")
    reaper.select_items(reaper.add_audio_item(track, source, 1.0, 2.0, startoffs=1.5))

    split(reaper)

    assert reaper.message_boxes == []
    assert reaper.track_tree() == ["Song", "Song stems", "  Vocals", "  Rest"]
    assert reaper.find_track("Rest").color not in (0, reaper.find_track("Vocals").color)
    span = read_span(source, 1.5, 2.0).samples
    total = sum(
        read_span(Path(reaper.find_track(name).items[0].active_take.source.filename)).samples
        for name in ("Vocals", "Rest")
    )
    np.testing.assert_allclose(total, span, atol=1e-5)
