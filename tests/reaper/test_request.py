"""What REAPER item values mean as a span of the source file."""

from __future__ import annotations

from pathlib import Path

import pytest

from daw_bridge.reaper.request import ItemSpan, Refusal, plan_item, read_request


def _fields(**overrides: object) -> dict[str, str]:
    fields = {
        "type": "WAVE",
        "file": "/music/song.wav",
        "startoffs": "3.2",
        "length": "2",
        "playrate": "1",
        "loop": "0",
        "source_length": "10",
    }
    fields.update({key: str(value) for key, value in overrides.items()})
    return fields


def test_an_item_plays_its_length_times_playrate_from_its_start_offset() -> None:
    plan = plan_item("1", _fields(playrate=1.5))
    assert isinstance(plan, ItemSpan)
    assert plan.path == Path("/music/song.wav")
    assert plan.start == pytest.approx(3.2)
    assert plan.duration == pytest.approx(3.0)
    assert plan.take_offset == 0


def test_a_section_is_read_from_its_parent_file_at_the_section_offset() -> None:
    fields = _fields(section=1, section_offset=4, section_length=5, startoffs=1)
    plan = plan_item("1", fields)
    assert isinstance(plan, ItemSpan)
    assert plan.start == pytest.approx(5.0)
    assert plan.duration == pytest.approx(2.0)


def test_silence_past_either_end_of_the_source_is_not_separated() -> None:
    before = plan_item("1", _fields(startoffs=-0.5, length=2))
    assert isinstance(before, ItemSpan)
    assert (before.start, before.duration, before.take_offset) == (0.0, 1.5, -0.5)
    after = plan_item("2", _fields(startoffs=9, length=3))
    assert isinstance(after, ItemSpan)
    assert after.duration == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("overrides", "problem", "fix"),
    [
        ({"type": "MIDI"}, "MIDI", "audio items"),
        ({"type": "EMPTY"}, "empty", "audio items"),
        ({"reversed": 1, "section": 1}, "reversed", "Un-reverse"),
        ({"type": "RPP_PROJECT", "file": ""}, "not an audio file", "Glue"),
        ({"loop": 1, "startoffs": 8, "length": 4}, "loops", "Glue"),
        ({"startoffs": 12}, "no part", "Check"),
    ],
)
def test_items_we_cannot_read_as_one_span_are_refused_with_a_fix(
    overrides: dict, problem: str, fix: str
) -> None:
    plan = plan_item("1", _fields(**overrides))
    assert isinstance(plan, Refusal)
    assert problem in plan.problem
    assert fix in plan.fix


def test_a_request_file_lists_its_settings_and_items_in_order(tmp_path: Path) -> None:
    path = tmp_path / "request.txt"
    path.write_text(
        "version=1\nmodel=htdemucs\nitems=2,1\n"
        + "".join(f"item.1.{k}={v}\n" for k, v in _fields().items())
        + "".join(f"item.2.{k}={v}\n" for k, v in _fields(type="MIDI").items()),
        encoding="utf-8",
    )
    request = read_request(path)
    assert request.setting("model") == "htdemucs"
    assert request.setting("preset", "none") == "none"
    assert [entry.key for entry in request.items] == ["2", "1"]
    assert isinstance(request.items[0], Refusal)
    assert isinstance(request.items[1], ItemSpan)


def test_non_ascii_and_equals_signs_in_paths_survive(tmp_path: Path) -> None:
    path = tmp_path / "request.txt"
    odd = "/musique/été = 2 \"quoted\" 'x'.wav"
    path.write_text(
        f"items=1\nitem.1.file={odd}\n"
        + "".join(f"item.1.{k}={v}\n" for k, v in _fields().items() if k != "file"),
        encoding="utf-8",
    )
    (plan,) = read_request(path).items
    assert isinstance(plan, ItemSpan)
    assert str(plan.path) == odd


def test_stretch_markers_widen_the_span_to_all_the_source_they_play() -> None:
    # 2 s item from 3.2 s; markers play source up to 5.8 s (and from 3.0 s before the first).
    plan = plan_item("1", _fields(stretch="0.2:3.2;1:4.6;1.5:5.3"))
    assert isinstance(plan, ItemSpan)
    assert plan.start == pytest.approx(3.0)
    assert plan.start + plan.duration == pytest.approx(5.8)
    assert plan.take_offset == pytest.approx(0.2)  # the stem file starts 0.2 s earlier
    assert plan_item("1", _fields(stretch="")) == plan_item("1", _fields())


def test_stems_to_keep_are_read_from_spaces_or_commas(tmp_path: Path) -> None:
    path = tmp_path / "request.txt"
    path.write_text("version=1\nkeep=Drums, bass  drums\nitems=\n", encoding="utf-8")
    assert read_request(path).keep() == ["drums", "bass"]
    path.write_text("version=1\nkeep=\nitems=\n", encoding="utf-8")
    assert read_request(path).keep() == []
