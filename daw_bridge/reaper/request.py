"""What a Lua shim asks for, turned into spans of source files.

The shim only copies REAPER's raw item and take values into a request file;
this module decides what audio that means. An item plays its take's source from
``D_STARTOFFS`` (source seconds) for ``D_LENGTH * D_PLAYRATE`` source seconds,
so that is the span we separate; a stem item at the item's position with the
same playrate then plays exactly in place of the original.

With stretch markers the take plays its source unevenly. The span then also
covers every marker's source position and the source played before the first
and after the last marker (rate 1 before playrate there), so whatever mapping
REAPER applies between markers, the stem source holds all of it; the shim
moves the copied markers back by the span's start, so the stem plays the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from daw_bridge.errors import DawBridgeError
from daw_bridge.reaper import keyvalue

#: REAPER source types we read as files (``GetMediaSourceType``).
FILE_SOURCES = ("WAVE", "FLAC", "MP3", "VORBIS", "OGG", "AIFF", "OPUS", "WAVPACK")
_GLUE_FIX = "Glue the item first (Item > Glue items), then split the glued item."
#: The request ``mode`` of the drum-kit action: the selected items are drums to split.
KIT_MODE = "kit"


@dataclass(frozen=True)
class ItemSpan:
    """One selected item: the span of ``path`` to separate and how to place the stems."""

    key: str
    path: Path
    start: float
    duration: float
    #: ``D_STARTOFFS`` for the stem takes: 0 unless the item starts before its source.
    take_offset: float
    job: str = ""
    #: Project tempo (quarter notes per minute) where the item starts; 0 if unknown.
    bpm: float = 0.0


@dataclass(frozen=True)
class Refusal:
    key: str
    problem: str
    fix: str


@dataclass
class Request:
    """The whole click: settings plus one entry per selected item."""

    settings: dict[str, str]
    items: list[ItemSpan | Refusal] = field(default_factory=list)

    def setting(self, name: str, default: str = "") -> str:
        return self.settings.get(name, "").strip() or default

    def flag(self, name: str, default: bool = False) -> bool:
        return _flag(self.settings, name, default)

    def keep(self) -> list[str]:
        """The "Stems to keep" setting as stem names ("drums bass", "Drums, bass", ...)."""
        text = self.setting("keep").lower().replace(",", " ").replace(";", " ")
        return list(dict.fromkeys(text.split()))


def _number(values: dict[str, str], key: str, default: float | None = None) -> float:
    text = values.get(key, "")
    try:
        return float(text)
    except ValueError:
        if default is not None and text == "":
            return default
        raise DawBridgeError(
            f"The request from REAPER has no valid number for '{key}' ({text!r}).",
            "Update the daw-bridge scripts with `daw-bridge install-reaper`.",
        ) from None


def _stretch_markers(values: dict[str, str]) -> list[tuple[float, float]]:
    """``pos:srcpos;...`` as the shim writes a take's stretch markers."""
    markers = []
    for part in values.get("stretch", "").split(";"):
        if part.strip():
            pos, _, srcpos = part.partition(":")
            try:
                markers.append((float(pos), float(srcpos)))
            except ValueError:
                raise DawBridgeError(
                    f"The request from REAPER has an unreadable stretch marker ({part!r}).",
                    "Update the daw-bridge scripts with `daw-bridge install-reaper`.",
                ) from None
    return sorted(markers)


def _played_range(offset: float, played: float, markers: list[tuple[float, float]]):
    """First and last source second the take may play (see the module docstring)."""
    if not markers:
        return offset, offset + played
    (first_pos, first_src), (last_pos, last_src) = markers[0], markers[-1]
    candidates = [offset, offset + played, first_src - first_pos, last_src + played - last_pos]
    candidates += [src for _, src in markers]
    return min(candidates), max(candidates)


def _flag(values: dict[str, str], key: str, default: bool = False) -> bool:
    text = values.get(key, "").strip().lower()
    return text in ("1", "true", "yes") if text else default


def read_request(path: Path) -> Request:
    values = keyvalue.read(path)
    settings = {k: v for k, v in values.items() if not k.startswith("item.")}
    keys = [k for k in values.get("items", "").split(",") if k.strip()]
    request = Request(settings)
    for key in keys:
        fields = {
            name.removeprefix(f"item.{key}."): value
            for name, value in values.items()
            if name.startswith(f"item.{key}.")
        }
        planned = plan_item(key.strip(), fields)
        if request.setting("mode") == KIT_MODE and isinstance(planned, ItemSpan):
            planned = _only_drums(planned, fields.get("stem", ""))
        request.items.append(planned)
    return request


def _only_drums(span: ItemSpan, stem: str) -> ItemSpan | Refusal:
    """The drum-kit action takes any audio item (a drums recording) or a drums stem, but
    not another stem daw-bridge made: kick and snare out of vocals are no use to anyone."""
    if stem in ("", "drums"):
        return span
    return Refusal(
        span.key,
        f"It is daw-bridge's {stem.removeprefix('kit:')} stem, not drums.",
        "Select a drums item or a Drums stem item.",
    )


def plan_item(key: str, fields: dict[str, str]) -> ItemSpan | Refusal:
    """The span one item plays, or why it cannot be split as it is."""
    kind = fields.get("type", "").upper()
    file = fields.get("file", "")
    job = fields.get("job", "")
    if kind == "MIDI":
        return Refusal(key, "It is a MIDI item.", "Select audio items to split.")
    if kind in ("EMPTY", ""):
        return Refusal(key, "It is an empty item with no audio.", "Select audio items to split.")
    if _flag(fields, "reversed"):
        return Refusal(
            key,
            "Its take is reversed.",
            "Un-reverse it (Item properties > Reverse), or glue it (Item > Glue items) "
            "and split the glued item.",
        )
    if kind not in FILE_SOURCES or not file:
        return Refusal(key, f"Its source is not an audio file (type {kind}).", _GLUE_FIX)
    length = _number(fields, "length")
    playrate = _number(fields, "playrate", 1.0)
    offset = _number(fields, "startoffs", 0.0)
    if length <= 0 or playrate <= 0:
        return Refusal(key, "It has zero length or an invalid playrate.", "Check the item.")
    source_length = _number(fields, "source_length")
    section_offset = 0.0
    if _flag(fields, "section"):
        section_offset = _number(fields, "section_offset", 0.0)
        section_length = _number(fields, "section_length", 0.0)
        if section_length > 0:
            source_length = section_length
    played = length * playrate
    first, end = _played_range(offset, played, _stretch_markers(fields))
    if _flag(fields, "loop") and (first < 0 or end > source_length + 1e-9):
        return Refusal(key, "The item loops its source.", _GLUE_FIX)
    # Outside the source REAPER plays silence; we separate only what exists.
    start = max(0.0, first)
    stop = min(end, source_length)
    if stop <= start:
        return Refusal(key, "The item plays no part of its source.", "Check the item.")
    return ItemSpan(
        key=key,
        path=Path(file),
        start=section_offset + start,
        duration=stop - start,
        take_offset=offset - start,
        job=job,
        bpm=_number(fields, "bpm", 0.0),
    )
