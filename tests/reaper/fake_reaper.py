"""A fake REAPER for running the project's ReaScript (Lua) files under test.

REAPER cannot be installed on the test machines, so the Lua shims in ``reaper_scripts/`` run
in a real Lua 5.4 interpreter (lupa) against a ``reaper`` and a ``gfx`` table written here in
Python. The fake is deliberately *strict*: it only offers functions that REAPER has (checked
against ``shared/reaper/reaper_api.json``), rejects calls with a wrong number of arguments,
rejects pointers of the wrong kind or already deleted, and errors on unknown parameter names
where REAPER would silently return 0. A script that passes here should not trip over REAPER's
API; whether it *looks* right in REAPER still needs a human.

Typical use::

    with FakeReaper(tmp_path) as fake:
        track = fake.add_track("Song")
        item = fake.add_audio_item(track, write_wav(tmp_path / "a.wav", noise()), position=2.0)
        fake.select_items(item)
        fake.user_inputs.append(["htdemucs", "4"])      # answers GetUserInputs
        fake.run_script("reaper_scripts/separate.lua")  # runs the main chunk
        fake.run_defer(until=lambda: "Done" in fake.drawn_texts(), timeout=60)
        assert fake.track_tree() == ["Song", "  vocals", ...]

Choices the fake makes where REAPER's documentation is silent are marked "Fake choice" in
the docstrings below.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED

try:  # lupa >= 2 ships one module per Lua version; REAPER 7 embeds Lua 5.4.
    from lupa import lua54 as _lupa
except ImportError:  # pragma: no cover - older lupa builds
    import lupa as _lupa

LuaRuntime = _lupa.LuaRuntime
LuaError = _lupa.LuaError

API_PATH = SHARED / "reaper" / "reaper_api.json"


# --------------------------------------------------------------------------------------
# The API table
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def load_api(path: str | Path = API_PATH) -> dict[str, dict[str, Any]]:
    """``{"reaper.Name": {"doc", "params", "returns"}}``: the contract every fake function obeys.

    Without the official API list (``../shared`` beside the checkout, as in CI) there is
    nothing to build the fake from: tests using it are skipped with that reason.
    """
    if not Path(path).is_file():
        pytest.skip(f"no {path}: the fake REAPER is built from the official API list there")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["functions"]


def arity(spec: dict[str, Any]) -> tuple[int, int | None]:
    """(fewest, most) arguments a call may pass; ``params: null`` means any number."""
    params = spec["params"]
    if params is None:
        return 0, None
    return sum(1 for p in params if not p["optional"]), len(params)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class ReaperError(Exception):
    """Raised by a fake API function: becomes a Lua ``error()`` at the script's calling line."""


class UnknownApiFunction(ValueError):
    """A Python implementation was registered under a name REAPER does not have."""


class LuaScriptError(RuntimeError):
    """A Lua script failed; the message carries the Lua error and its traceback."""


# --------------------------------------------------------------------------------------
# Lua <-> Python value helpers
# --------------------------------------------------------------------------------------


def to_lua_str(value: str | bytes) -> bytes:
    """Python text to Lua bytes; surrogateescape lets undecodable file names round-trip."""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogateescape")


def from_lua_str(value: bytes | str) -> str:
    """Lua bytes to Python text (UTF-8, undecodable bytes kept as surrogates like os.fsdecode)."""
    if isinstance(value, str):
        return value
    return value.decode("utf-8", "surrogateescape")


def lua_truthy(value: Any) -> bool:
    """Lua truthiness: only nil and false are false (0 and "" are true)."""
    return value is not None and value is not False


def lua_number_to_str(value: int | float) -> str:
    """``tostring`` of a Lua 5.4 number (floats keep a ``.0``)."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.14g}"
    if text.lstrip("-").isdigit():
        text += ".0"
    return text


def lua_type_name(value: Any) -> str:
    """The Lua type (or REAPER pointer kind) of a value, for error messages."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, bytes | str):
        return "string"
    kind = getattr(value, "kind", None)
    if isinstance(kind, str):
        return kind
    return _lupa.lua_type(value) or type(value).__name__


def new_guid() -> str:
    """A REAPER-style GUID string: ``{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}``."""
    return "{" + str(uuid.uuid4()).upper() + "}"


# --------------------------------------------------------------------------------------
# Object model
# --------------------------------------------------------------------------------------

# Numeric parameters REAPER documents for *Info_Value (the JSON's doc strings are cut at
# 2000 characters, so the full lists are written out here), with the fake's defaults.
ITEM_PARAMS: dict[str, float] = {
    "B_MUTE": 0, "B_MUTE_ACTUAL": 0, "C_LANEPLAYS": 0, "C_MUTE_SOLO": 0, "B_LOOPSRC": 0,
    "B_ALLTAKESPLAY": 0, "B_UISEL": 0, "C_BEATATTACHMODE": -1, "C_AUTOSTRETCH": 0, "C_LOCK": 0,
    "D_VOL": 1.0, "D_POSITION": 0.0, "D_LENGTH": 0.0, "D_SNAPOFFSET": 0.0, "D_FADEINLEN": 0.0,
    "D_FADEOUTLEN": 0.0, "D_FADEINDIR": 0.0, "D_FADEOUTDIR": 0.0, "D_FADEINLEN_AUTO": 0.0,
    "D_FADEOUTLEN_AUTO": 0.0, "C_FADEINSHAPE": 0, "C_FADEOUTSHAPE": 0, "I_GROUPID": 0,
    "I_LASTY": 0, "I_LASTH": 0, "I_CUSTOMCOLOR": 0, "I_CURTAKE": 0, "IP_ITEMNUMBER": 0,
    "F_FREEMODE_Y": 0.0, "F_FREEMODE_H": 1.0, "I_FIXEDLANE": 0, "B_FIXEDLANE_HIDDEN": 0,
}  # fmt: skip
ITEM_READONLY = frozenset({"C_LANEPLAYS", "I_LASTY", "I_LASTH", "IP_ITEMNUMBER",
                           "B_FIXEDLANE_HIDDEN"})  # fmt: skip
TAKE_PARAMS: dict[str, float] = {
    "D_STARTOFFS": 0.0, "D_VOL": 1.0, "D_PAN": 0.0, "D_PANLAW": -1.0, "D_PLAYRATE": 1.0,
    "D_PITCH": 0.0, "B_PPITCH": 0, "I_LASTY": 0, "I_LASTH": 0, "I_CHANMODE": 0,
    "I_PITCHMODE": -1, "I_STRETCHFLAGS": 0, "F_STRETCHFADESIZE": 0.0025, "I_RECPASSID": 0,
    "I_TAKEFX_NCH": 2, "I_CUSTOMCOLOR": 0, "IP_TAKENUMBER": 0, "IP_SPECEDIT:CNT": 0,
}  # fmt: skip
TAKE_READONLY = frozenset({"I_LASTY", "I_LASTH", "IP_TAKENUMBER", "IP_SPECEDIT:CNT"})
TRACK_PARAMS: dict[str, float] = {
    "B_MUTE": 0, "B_PHASE": 0, "B_RECMON_IN_EFFECT": 0, "IP_TRACKNUMBER": 0, "I_SOLO": 0,
    "B_SOLO_DEFEAT": 0, "I_FXEN": 1, "I_RECARM": 0, "I_RECINPUT": 0, "I_RECMODE": 0,
    "I_RECMODE_FLAGS": 0, "I_RECMON": 0, "I_RECMONITEMS": 0, "B_AUTO_RECARM": 0, "I_VUMODE": 0,
    "I_AUTOMODE": 0, "I_NCHAN": 2, "I_SELECTED": 0, "I_WNDH": 0, "I_TCPH": 0, "I_TCPY": 0,
    "I_MCPX": 0, "I_MCPY": 0, "I_MCPW": 0, "I_MCPH": 0, "I_FOLDERDEPTH": 0,
    "I_FOLDERCOMPACT": 0, "I_MIDIHWOUT": -1, "I_MIDI_INPUT_CHANMAP": -1, "I_MIDI_CTL_CHAN": -1,
    "I_MIDI_TRACKSEL_FLAG": 0, "I_PERFFLAGS": 0, "I_CUSTOMCOLOR": 0, "I_HEIGHTOVERRIDE": 0,
    "I_SPACER": 0, "B_HEIGHTLOCK": 0, "D_VOL": 1.0, "D_PAN": 0.0, "D_WIDTH": 1.0,
    "D_DUALPANL": -1.0, "D_DUALPANR": 1.0, "I_PANMODE": -1, "D_PANLAW": -1.0,
    "I_PANLAW_FLAGS": -1, "B_SHOWINMIXER": 1, "B_SHOWINTCP": 1, "B_MAINSEND": 1,
    "C_MAINSEND_OFFS": 0, "C_MAINSEND_NCH": 0, "I_FREEMODE": 0, "I_NUMFIXEDLANES": 1,
    "C_LANESCOLLAPSED": 0, "C_LANESETTINGS": 0, "C_ALLLANESPLAY": 0, "C_BEATATTACHMODE": -1,
    "F_MCP_FXSEND_SCALE": 0.0, "F_MCP_FXPARM_SCALE": 0.0, "F_MCP_SENDRGN_SCALE": 0.0,
    "F_TCP_FXPARM_SCALE": 0.0, "I_PLAY_OFFSET_FLAG": 1, "D_PLAY_OFFSET": 0.0,
}  # fmt: skip
TRACK_READONLY = frozenset({"B_RECMON_IN_EFFECT", "IP_TRACKNUMBER", "I_WNDH", "I_TCPH", "I_TCPY",
                            "I_MCPX", "I_MCPY", "I_MCPW", "I_MCPH"})  # fmt: skip
TRACK_STRINGS = ("P_NAME", "P_ICON", "P_MCP_LAYOUT", "P_TCP_LAYOUT", "P_RAZOREDITS",
                 "P_RAZOREDITS_EXT", "GUID")  # fmt: skip

# GetMediaSourceType by file extension (REAPER names WAV files "WAVE").
SOURCE_TYPES = {
    ".wav": "WAVE", ".w64": "WAVE", ".flac": "FLAC", ".mp3": "MP3", ".ogg": "VORBIS",
    ".opus": "OPUS", ".aif": "AIFF", ".aiff": "AIFF", ".mid": "MIDI", ".midi": "MIDI",
}  # fmt: skip


def _store(name: str, value: float) -> float:
    """Numeric parameters are stored as REAPER's C types would hold them."""
    if name.startswith("B_"):
        return 1.0 if value else 0.0
    if name.startswith(("I_", "C_")):
        return float(int(value))
    return float(value)


@dataclass(eq=False, repr=False)
class Source:
    """A PCM_source. ``length`` is in seconds, or quarter notes when ``length_is_qn``."""

    type: str
    filename: str = ""
    length: float = 0.0
    samplerate: int = 0
    channels: int = 0
    length_is_qn: bool = False
    parent: Source | None = None
    section_offset: float = 0.0
    section_length: float = 0.0
    reverse: bool = False
    destroyed: bool = False
    kind = "PCM_source"

    def __repr__(self) -> str:  # also what Lua's tostring() shows: unique and stable
        return f"PCM_source: 0x{id(self):x}"

    @property
    def root(self) -> Source:
        """The file source under any SECTION wrappers."""
        return self.root_of(self)

    @staticmethod
    def root_of(src: Source) -> Source:
        while src.parent is not None:
            src = src.parent
        return src

    @property
    def deleted(self) -> bool:
        return self.destroyed


#: Take envelopes REAPER always offers by name, and their RPPXML chunk names.
TAKE_ENVELOPES = {"Volume": "VOLENV", "Pan": "PANENV", "Mute": "MUTEENV", "Pitch": "PITCHENV"}


def _num_text(value: float) -> str:
    return f"{value:.14g}"


class Envelope:
    """A take envelope (built-in, or of a take FX parameter when ``fx`` >= 0).

    Points are (time, value, shape, tension, selected); time is seconds from the item start.
    Its state chunk is RPPXML as REAPER writes it (fewer lines: Fake choice).
    """

    kind = "TrackEnvelope"

    def __init__(self, take: Take, name: str, chunk_name: str, fx: int = -1, param: int = -1):
        self.take = take
        self.name = name
        self.chunk_name = chunk_name
        self.fx = fx
        self.param = param
        self.points: list[tuple[float, float, int, float, bool]] = []
        self.active = True
        self.visible = True
        self.armed = False
        self.extra: list[str] = []  # lines the fake does not interpret, kept as written
        self.guid = new_guid()
        self.removed = False

    def __repr__(self) -> str:
        return f"TrackEnvelope: 0x{id(self):x}"

    @property
    def deleted(self) -> bool:
        return self.removed or self.take.deleted

    def header(self) -> str:
        if self.chunk_name == "PARMENV":
            return f"<PARMENV {self.param} 0 1 0"
        return "<" + self.chunk_name

    def chunk(self) -> str:
        lines = [
            self.header(),
            f"EGUID {self.guid}",
            f"ACT {int(self.active)} -1",
            f"VIS {int(self.visible)} 1 1",
            "LANEHEIGHT 0 0",
            f"ARM {int(self.armed)}",
            "DEFSHAPE 0 -1 -1",
            *self.extra,
        ]
        for time_, value, shape, tension, selected in self.points:
            line = f"PT {_num_text(time_)} {_num_text(value)} {shape}"
            if tension or selected:
                line += f" {_num_text(tension)} {int(selected)}"
            lines.append(line)
        return "\n".join([*lines, ">"]) + "\n"

    def apply_chunk(self, text: str) -> bool:
        """Set the state from RPPXML; false (nothing changed) unless it is this kind's chunk.

        Fake choice: the envelope keeps its own GUID (EGUID lines are ignored).
        """
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if len(lines) < 2 or lines[-1] != ">":
            return False
        if lines[0].split()[0] != "<" + self.chunk_name:
            return False
        points, extra = [], []
        active, visible, armed = self.active, self.visible, self.armed
        try:
            for line in lines[1:-1]:
                word, *rest = line.split()
                if word == "PT":
                    tension = float(rest[3]) if len(rest) > 3 else 0.0
                    selected = len(rest) > 4 and rest[4] == "1"
                    points.append((float(rest[0]), float(rest[1]), int(rest[2]), tension,
                                   selected))  # fmt: skip
                elif word == "ACT":
                    active = rest[0] == "1"
                elif word == "VIS":
                    visible = rest[0] == "1"
                elif word == "ARM":
                    armed = rest[0] == "1"
                elif word not in ("EGUID", "LANEHEIGHT", "DEFSHAPE"):
                    extra.append(line)
        except (IndexError, ValueError):
            return False
        self.points, self.extra = points, extra
        self.active, self.visible, self.armed = active, visible, armed
        return True


class Take:
    """A MediaItem_Take: numeric values, name, P_EXT strings, GUID and source."""

    kind = "MediaItem_Take"

    def __init__(self, item: Item, source: Source, name: str = "") -> None:
        self.item = item
        self.source = source
        self.name = name
        self.values: dict[str, float] = dict(TAKE_PARAMS)
        self.ext: dict[str, str] = {}
        self.guid = new_guid()
        self.deleted = False
        #: Take FX chain: {"name", "params", "enabled"} per FX.
        self.fx: list[dict[str, Any]] = []
        #: Built-in and FX parameter envelopes, in the order REAPER lists them.
        self.envelopes: list[Envelope] = []
        #: Stretch markers [pos, srcpos, slope], sorted by pos. pos is seconds from the item
        #: start before the take's playrate is applied; srcpos is seconds in the source.
        self.stretch_markers: list[list[float]] = []

    def __repr__(self) -> str:
        return f"MediaItem_Take: 0x{id(self):x}"

    def envelope(self, name: str) -> Envelope | None:
        return next((e for e in self.envelopes if e.name == name and not e.removed), None)

    def get(self, name: str) -> float:
        if name == "IP_TAKENUMBER":
            return float(self.item.takes.index(self))
        return self.values[name]

    def set(self, name: str, value: float) -> None:
        self.values[name] = _store(name, value)

    @property
    def startoffs(self) -> float:
        return self.values["D_STARTOFFS"]

    @property
    def playrate(self) -> float:
        return self.values["D_PLAYRATE"]

    def describe(self) -> dict[str, Any]:
        """Everything a test usually asserts about a take, as plain data."""
        src = self.source
        return {
            "name": self.name,
            "source_type": src.type,
            "file": src.root.filename,
            "section": (src.section_offset, src.section_length, src.reverse)
            if src.type == "SECTION"
            else None,
            "ext": dict(self.ext),
            "fx": [dict(fx, params=list(fx["params"])) for fx in self.fx],
            "envelopes": {e.name: list(e.points) for e in self.envelopes if not e.removed},
            "stretch_markers": [list(m) for m in self.stretch_markers],
            **{k: v for k, v in self.values.items() if k in TAKE_PARAMS},
        }


class Item:
    """A MediaItem on a track: numeric values, selection, notes, P_EXT, takes."""

    kind = "MediaItem"

    def __init__(self, track: Track) -> None:
        self.track = track
        self.values: dict[str, float] = dict(ITEM_PARAMS)
        self.takes: list[Take] = []
        self.active_take_index = 0
        self.selected = False
        self.notes = ""
        self.ext: dict[str, str] = {}
        self.guid = new_guid()
        self.deleted = False

    def __repr__(self) -> str:
        return f"MediaItem: 0x{id(self):x}"

    @property
    def active_take(self) -> Take | None:
        if not self.takes:
            return None
        return self.takes[min(self.active_take_index, len(self.takes) - 1)]

    def get(self, name: str) -> float:
        if name == "B_UISEL":
            return 1.0 if self.selected else 0.0
        if name == "I_CURTAKE":
            return float(self.takes.index(self.active_take)) if self.takes else 0.0
        if name == "IP_ITEMNUMBER":
            return float(self.track.items.index(self))
        return self.values[name]

    def set(self, name: str, value: float) -> None:
        if name == "B_UISEL":
            self.selected = bool(value)
        elif name == "I_CURTAKE":
            if 0 <= int(value) < len(self.takes):
                self.active_take_index = int(value)
        else:
            self.values[name] = _store(name, value)
            if name == "B_MUTE":  # documented: setting B_MUTE clears C_MUTE_SOLO
                self.values["C_MUTE_SOLO"] = 0.0

    @property
    def position(self) -> float:
        return self.values["D_POSITION"]

    @property
    def length(self) -> float:
        return self.values["D_LENGTH"]

    def describe(self) -> dict[str, Any]:
        """Everything a test usually asserts about an item, as plain data."""
        values = {k: self.get(k) for k in ITEM_PARAMS}
        return {
            **values,
            "selected": self.selected,
            "notes": self.notes,
            "ext": dict(self.ext),
            "active_take": self.takes.index(self.active_take) if self.takes else None,
            "takes": [t.describe() for t in self.takes],
        }


class Track:
    """A MediaTrack: name, numeric values (folder depth, colour, mute...), P_EXT, items."""

    kind = "MediaTrack"

    def __init__(self, project: Project, name: str = "", is_master: bool = False) -> None:
        self.project = project
        self.name = name
        self.is_master = is_master
        self.values: dict[str, float] = dict(TRACK_PARAMS)
        self.strings: dict[str, str] = {}
        self.ext: dict[str, str] = {}
        self.items: list[Item] = []
        self.guid = new_guid()
        self.selected = False
        self.deleted = False

    def __repr__(self) -> str:
        return f"MediaTrack: 0x{id(self):x}"

    @property
    def index(self) -> int:
        """0-based position in the project's track list (-1 for the master track)."""
        return -1 if self.is_master else self.project.tracks.index(self)

    @property
    def number(self) -> int:
        """IP_TRACKNUMBER: 1-based, -1 for master."""
        return -1 if self.is_master else self.index + 1

    @property
    def folder_depth(self) -> int:
        return int(self.values["I_FOLDERDEPTH"])

    @folder_depth.setter
    def folder_depth(self, value: int) -> None:
        self.values["I_FOLDERDEPTH"] = float(int(value))

    @property
    def color(self) -> int:
        return int(self.values["I_CUSTOMCOLOR"])

    @property
    def mute(self) -> bool:
        return bool(self.values["B_MUTE"])

    @property
    def parent(self) -> Track | None:
        return self.project.parent_of(self)

    @property
    def level(self) -> int:
        """Folder nesting level: 0 at top level."""
        return self.project.level_of(self)

    def get(self, name: str) -> float:
        if name == "IP_TRACKNUMBER":
            return float(self.number)
        if name == "I_SELECTED":
            return 1.0 if self.selected else 0.0
        return self.values[name]

    def set(self, name: str, value: float) -> None:
        if name == "I_SELECTED":
            self.selected = bool(value)
        else:
            self.values[name] = _store(name, value)


class Project:
    """A ReaProject: the ordered track list plus file/recording paths."""

    kind = "ReaProject"

    def __init__(self, record_path: str, file: str | None = None) -> None:
        self.tracks: list[Track] = []
        self.master = Track(self, "MASTER", is_master=True)
        self.record_path = record_path
        self.file = file
        self.cursor = 0.0
        self.bpm = 120.0  # one tempo, no tempo markers
        self.dirty = False
        self.deleted = False

    def __repr__(self) -> str:
        return f"ReaProject: 0x{id(self):x}"

    def items(self) -> list[Item]:
        """All items in REAPER's project order: track by track, then item order on the track."""
        return [item for track in self.tracks for item in track.items]

    def _walk(self) -> Iterable[tuple[Track, Track | None, int]]:
        """(track, parent, level) per track, following I_FOLDERDEPTH like REAPER does.

        1 opens a folder with this track as parent; -N closes N levels after this track;
        closing more levels than are open is clamped.
        """
        stack: list[Track] = []
        for track in self.tracks:
            yield track, (stack[-1] if stack else None), len(stack)
            depth = track.folder_depth
            if depth > 0:
                stack.append(track)
            elif depth < 0:
                del stack[max(0, len(stack) + depth) :]

    def parent_of(self, track: Track) -> Track | None:
        return next((p for t, p, _ in self._walk() if t is track), None)

    def level_of(self, track: Track) -> int:
        return next((lvl for t, _, lvl in self._walk() if t is track), 0)


# --------------------------------------------------------------------------------------
# Records kept for tests
# --------------------------------------------------------------------------------------


@dataclass
class UndoPoint:
    """One entry of the undo history: a closed Undo_BeginBlock/EndBlock pair or a state change."""

    description: str
    flags: int
    changes: list[str]
    kind: str = "block"  # "block" or "state_change"
    project: Any = None  # the ReaProject of the *2 variants; None: the active one


@dataclass
class MessageBox:
    msg: str
    title: str
    type: int
    answer: int


@dataclass
class ExecCall:
    cmdline: str
    timeoutmsec: int
    argv: list[str] | None
    result: bytes | None


@dataclass
class BackgroundProcess:
    """A process started by ExecProcess with timeout -1/-2; output goes to ``log_path``."""

    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class DrawnText:
    text: str
    x: float
    y: float
    w: float
    h: float
    frame: int
    color: tuple[float, float, float, float]

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


@dataclass
class DrawOp:
    op: str
    args: tuple[Any, ...]
    color: tuple[float, float, float, float]
    text: DrawnText | None = None


@dataclass
class Frame:
    """What the script drew between two gfx.update() calls."""

    index: int
    ops: list[DrawOp] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [op.text.text for op in self.ops if op.text is not None]


class GfxWindow:
    """State of one script's gfx window: open flag, frames drawn, pending input."""

    def __init__(self) -> None:
        self.initialised = False
        self.open = False
        self.title = ""
        self.frames: list[Frame] = []
        self.current = Frame(0)
        self.keys: deque[int] = deque()
        self.inputs: deque[tuple[float, float, int]] = deque()
        self.mouse_cap = 0

    def all_frames(self) -> list[Frame]:
        """Finished frames plus the one being drawn."""
        return [*self.frames, self.current] if self.current.ops else list(self.frames)


class ScriptRun:
    """One script instance: its own Lua state, defer queue, atexit list and gfx window."""

    def __init__(self, path: str, lua: Any, command_id: int) -> None:
        self.path = path
        self.lua = lua
        self.command_id = command_id
        self.queue: list[Any] = []
        self.atexit: list[Any] = []
        self.gfx = GfxWindow()
        self.gfx_table: Any = None
        self.running = True
        self.steps = 0
        self.call: Callable[..., Any] = lambda fn: (True,)

    def __repr__(self) -> str:
        return f"<ScriptRun {self.path} running={self.running}>"


# Returns that REAPER's Lua binding gives differently from the luadoc-derived JSON: the
# first value of get_action_context is REAPER's documented "boolean is_new_value".
_RETURN_OVERRIDES = {
    "reaper.get_action_context": [
        "boolean", "string", "integer", "integer", "integer", "integer", "integer", "string",
    ],
}  # fmt: skip
_POINTER_TYPES = {"MediaTrack": Track, "MediaItem": Item, "MediaItem_Take": Take,
                  "PCM_source": Source, "TrackEnvelope": Envelope}  # fmt: skip
_GFX_VARIABLES: dict[str, float] = {
    "r": 1.0, "g": 1.0, "b": 1.0, "a": 1.0, "a2": 1.0, "mode": 0, "w": 0, "h": 0, "x": 0, "y": 0,
    "clear": -1, "dest": -1, "texth": 16, "ext_retina": 0, "mouse_x": 0, "mouse_y": 0,
    "mouse_cap": 0, "mouse_wheel": 0, "mouse_hwheel": 0,
}  # fmt: skip
_MESSAGE_BOX_DEFAULTS = {0: 1, 1: 1, 2: 3, 3: 6, 4: 6, 5: 4}

_LUA_SUPPORT = b"""
local pack, unpack, traceback, rawget = table.pack, table.unpack, debug.traceback, rawget
local xpcall, loadfile, type, error, tostring = xpcall, loadfile, type, error, tostring
local setmetatable = setmetatable
local M = {}
-- An API function: Python answers (true, results...) or (false, message); the message is
-- raised at the script's calling line, as REAPER's own argument errors are.
function M.wrap(py)
  return function(...)
    local r = pack(py(...))
    if not r[1] then error(r[2], 2) end
    return unpack(r, 2, r.n)
  end
end
function M.guard(tbl, prefix, classify)
  setmetatable(tbl, {__index = function(_, key)
    local kind = classify(key)
    if kind == "api" then
      return function() error("not implemented in the fake: " .. prefix .. tostring(key), 2) end
    end
    error(kind, 2)
  end})
end
local function handler(e)
  if type(e) == "string" then return traceback(e, 2) end
  return {e, traceback("(error raised in Python)", 2)}  -- a Python exception object
end
function M.run_file(path)
  local chunk, err = loadfile(path)
  if not chunk then return false, err end
  return xpcall(chunk, handler)
end
function M.call(fn) return xpcall(fn, handler) end
return M
"""


def api(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a FakeReaper method as the implementation of the API function ``name``."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn._api_name = name  # type: ignore[attr-defined]
        return fn

    return mark


def _default_os() -> str:
    if sys.platform.startswith("win"):
        return "Win64"
    if sys.platform == "darwin":
        return "macOS-arm64"
    return "Other"


def _probe_audio(path: str) -> tuple[float, int, int]:
    """(seconds, samplerate, channels) of a real audio file; zeros when it cannot be read."""
    try:
        import soundfile

        info = soundfile.info(path)
        return info.frames / info.samplerate, int(info.samplerate), int(info.channels)
    except Exception:
        pass
    try:
        from pedalboard.io import AudioFile

        with AudioFile(path) as handle:
            return handle.frames / handle.samplerate, int(handle.samplerate), handle.num_channels
    except Exception:
        return 0.0, 0, 0


def _probe_midi_qn(path: str) -> float:
    """Length of a MIDI file in quarter notes (REAPER reports MIDI source lengths in QN)."""
    try:
        import mido

        midi = mido.MidiFile(path)
        ticks = max((sum(msg.time for msg in track) for track in midi.tracks), default=0)
        return ticks / midi.ticks_per_beat
    except Exception:
        return 0.0


# --------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------


class FakeReaper:
    """A REAPER session: one project, ExtState, consoles and dialogs, plus running scripts.

    ``root`` (a test's ``tmp_path``) holds the resource path (``root/resource``), the project
    recording path (``root/project``) and logs of background processes (``root/exec-logs``).
    ``persistent_ext_state`` is the "reaper-extstate.ini": pass the same dict to a second
    FakeReaper to simulate restarting REAPER. ``env`` is the environment of processes started
    by ExecProcess (None: inherit). ``os_name`` is what GetOS answers and decides the
    ColorToNative byte order.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        api_path: str | os.PathLike[str] = API_PATH,
        persistent_ext_state: dict[tuple[str, str], str] | None = None,
        env: dict[str, str] | None = None,
        os_name: str | None = None,
        exec_capture_stderr: bool = True,
        project_file: str | None = None,
    ) -> None:
        self.api = load_api(str(api_path))
        self.root = Path(root)
        self.resource_path = self.root / "resource"
        self.resource_path.mkdir(parents=True, exist_ok=True)
        record_path = self.root / "project"
        record_path.mkdir(parents=True, exist_ok=True)
        #: Open project tabs, in tab order; ``project`` is the active one (proj 0/nil in the API).
        self.projects: list[Project] = [Project(str(record_path), project_file)]
        self._active_project = self.projects[0]
        self.os_name = os_name or _default_os()
        self.app_version = "7.40/" + {"Win64": "x64", "Other": "linux-x86_64"}.get(
            self.os_name, self.os_name
        )

        # ExtState: the session's values, and the ini file behind persist=true.
        self.persistent_ext_state = persistent_ext_state if persistent_ext_state is not None else {}
        self.ext_state: dict[tuple[str, str], str] = dict(self.persistent_ext_state)

        # Child processes.
        self.exec_env = env
        self.exec_cwd: str | None = None
        self.exec_capture_stderr = exec_capture_stderr
        self.exec_calls: list[ExecCall] = []
        self.background: list[BackgroundProcess] = []

        # Dialogs and console: scripted answers in, records out.
        self.message_box_answers: list[int] = []
        self.message_boxes: list[MessageBox] = []
        self.user_inputs: list[Any] = []
        self.user_input_calls: list[tuple[str, list[str], list[str]]] = []
        #: Seconds added to reaper.time_precise(), so a test can jump past a timeout.
        self.clock_offset = 0.0
        self.console: list[str] = []
        self.menu_answers: list[Any] = []
        self.menus: list[tuple[str, int]] = []
        self.commands: list[tuple[int, int]] = []

        # Undo and UI bookkeeping.
        self.undo_points: list[UndoPoint] = []
        self.changes_outside_undo: list[str] = []
        self.problems: list[str] = []
        self.ui_updates: list[str] = []
        self.prevent_ui_refresh = 0
        self._undo_depth = 0
        self._undo_changes: list[str] = []

        self.runs: list[ScriptRun] = []
        self._current: ScriptRun | None = None
        self._next_command_id = 50000
        self._impls: dict[str, Callable[..., Any]] = {}
        for attr in dir(type(self)):
            name = getattr(getattr(type(self), attr), "_api_name", None)
            if name is not None:
                self.register(name, getattr(self, attr))

    # ---------------------------------------------------------------- registration

    def register(self, name: str, impl: Callable[..., Any]) -> None:
        """Offer ``impl`` as API function ``name`` ("reaper.X" or "gfx.x") to scripts run later.

        Raises UnknownApiFunction unless REAPER has that function: the fake never offers more
        than REAPER does. Tests may use this to stub a function for one scenario.
        """
        if name not in self.api:
            raise UnknownApiFunction(f"{name} is not in the REAPER API ({API_PATH.name})")
        self._impls[name] = impl

    @property
    def implemented(self) -> list[str]:
        """Names of the API functions this fake implements."""
        return sorted(self._impls)

    # ---------------------------------------------------------------- project tabs

    @property
    def project(self) -> Project:
        """The active project tab: what REAPER means by proj 0 or nil."""
        return self._active_project

    def new_project_tab(self, file: str | None = None, *, activate: bool = True) -> Project:
        """Open another project tab (File > New project tab); it becomes active by default."""
        record_path = self.root / f"project{len(self.projects) + 1}"
        record_path.mkdir(parents=True, exist_ok=True)
        project = Project(str(record_path), file)
        self.projects.append(project)
        if activate:
            self._active_project = project
        return project

    def select_project(self, project: Project) -> None:
        """The user clicks another project tab."""
        assert project in self.projects, "that project tab is closed"
        self._active_project = project

    def close_project_tab(self, project: Project) -> None:
        """The user closes a tab: its project, tracks, items and takes become invalid pointers.

        Fake choice: closing the active tab activates the tab before it (REAPER does the same
        with its default settings); closing the last tab leaves a new empty project.
        """
        index = self.projects.index(project)
        self.projects.remove(project)
        project.deleted = True
        for track in project.tracks:
            track.deleted = True
            for item in track.items:
                item.deleted = True
                for take in item.takes:
                    take.deleted = True
        if not self.projects:
            self.new_project_tab()
        elif self._active_project is project:
            self._active_project = self.projects[max(0, index - 1)]

    # ---------------------------------------------------------------- scene builders

    def add_track(
        self,
        name: str = "",
        *,
        folder_depth: int = 0,
        color: int = 0,
        mute: bool = False,
        index: int | None = None,
        selected: bool = False,
    ) -> Track:
        """Append (or insert at ``index``) a track, as if the user had made it."""
        track = Track(self.project, name)
        track.folder_depth = folder_depth
        track.values["I_CUSTOMCOLOR"] = float(color)
        track.values["B_MUTE"] = float(mute)
        track.selected = selected
        tracks = self.project.tracks
        tracks.insert(len(tracks) if index is None else index, track)
        return track

    def make_source(self, path: str | os.PathLike[str], source_type: str | None = None) -> Source:
        """A file source as PCM_Source_CreateFromFile makes it (length read from the file)."""
        filename = os.fspath(path)
        ext = os.path.splitext(filename)[1].lower()
        kind = source_type or SOURCE_TYPES.get(ext, ext.lstrip(".").upper() or "UNKNOWN")
        if kind == "MIDI":
            return Source("MIDI", filename, _probe_midi_qn(filename), 0, 0, length_is_qn=True)
        seconds, samplerate, channels = _probe_audio(filename)
        return Source(kind, filename, seconds, samplerate, channels)

    def add_item(
        self,
        track: Track,
        position: float = 0.0,
        length: float = 0.0,
        *,
        selected: bool = False,
        mute: bool = False,
        loop: bool = False,
        color: int = 0,
        notes: str = "",
        fadein: float = 0.0,
        fadeout: float = 0.0,
        values: dict[str, float] | None = None,
    ) -> Item:
        """An item without takes (what AddMediaItemToTrack makes); other builders add takes."""
        item = Item(track)
        for name, value in {
            "D_POSITION": position, "D_LENGTH": length, "B_MUTE": mute, "B_LOOPSRC": loop,
            "I_CUSTOMCOLOR": color, "D_FADEINLEN": fadein, "D_FADEOUTLEN": fadeout,
            **(values or {}),
        }.items():  # fmt: skip
            self._check_param(name, ITEM_PARAMS, "item")
            item.set(name, float(value))
        item.selected = selected
        item.notes = notes
        track.items.append(item)
        return item

    def add_take(
        self,
        item: Item,
        source: Source,
        *,
        name: str | None = None,
        active: bool = True,
        startoffs: float = 0.0,
        playrate: float = 1.0,
        preserve_pitch: bool = False,
        pitch: float = 0.0,
        chanmode: int = 0,
        volume: float = 1.0,
        values: dict[str, float] | None = None,
    ) -> Take:
        """Add a take playing ``source`` to ``item`` (made active unless ``active=False``)."""
        if name is None:
            name = os.path.basename(source.root.filename)
        take = Take(item, source, name)
        for pname, value in {
            "D_STARTOFFS": startoffs, "D_PLAYRATE": playrate, "B_PPITCH": preserve_pitch,
            "D_PITCH": pitch, "I_CHANMODE": chanmode, "D_VOL": volume, **(values or {}),
        }.items():  # fmt: skip
            self._check_param(pname, TAKE_PARAMS, "take")
            take.set(pname, float(value))
        item.takes.append(take)
        if active:
            item.active_take_index = len(item.takes) - 1
        return take

    def add_audio_item(
        self,
        track: Track,
        path: str | os.PathLike[str],
        position: float = 0.0,
        length: float | None = None,
        *,
        startoffs: float = 0.0,
        playrate: float = 1.0,
        source_type: str | None = None,
        take_name: str | None = None,
        take_values: dict[str, float] | None = None,
        **item_kwargs: Any,
    ) -> Item:
        """An item with one take on the audio file ``path``.

        ``length`` defaults to what is left of the file after ``startoffs`` at ``playrate``.
        ``item_kwargs`` go to add_item (selected, mute, loop, color, notes, fadein, fadeout,
        values); ``take_values`` sets further take parameters (B_PPITCH, D_PITCH, ...).
        """
        source = self.make_source(path, source_type)
        if length is None:
            length = max(0.0, (source.length - startoffs) / playrate)
        item = self.add_item(track, position, length, **item_kwargs)
        self.add_take(item, source, name=take_name, startoffs=startoffs, playrate=playrate,
                      values=take_values)  # fmt: skip
        return item

    def add_section_item(
        self,
        track: Track,
        path: str | os.PathLike[str],
        position: float = 0.0,
        length: float | None = None,
        *,
        section_offset: float = 0.0,
        section_length: float | None = None,
        reverse: bool = False,
        startoffs: float = 0.0,
        playrate: float = 1.0,
        take_values: dict[str, float] | None = None,
        **item_kwargs: Any,
    ) -> Item:
        """An item whose take plays a SECTION source (a section and/or reversed file).

        This is what REAPER makes for "Item properties: section" or "Reverse items as new
        take": the SECTION source's parent is the file, and PCM_Source_GetSectionInfo gives
        (true, section_offset, section_length, reverse).
        """
        parent = self.make_source(path)
        if section_length is None:
            section_length = max(0.0, parent.length - section_offset)
        source = Source("SECTION", "", section_length, parent.samplerate, parent.channels,
                        parent=parent, section_offset=section_offset,
                        section_length=section_length, reverse=reverse)  # fmt: skip
        if length is None:
            length = max(0.0, (section_length - startoffs) / playrate)
        item = self.add_item(track, position, length, **item_kwargs)
        self.add_take(item, source, startoffs=startoffs, playrate=playrate, values=take_values)
        return item

    def add_midi_item(
        self,
        track: Track,
        position: float = 0.0,
        length: float = 1.0,
        *,
        path: str | os.PathLike[str] | None = None,
        take_name: str = "",
        bpm: float = 120.0,
        **item_kwargs: Any,
    ) -> Item:
        """A MIDI item: in-project MIDI (no file name) unless ``path`` names a .mid file.

        The source length is in quarter notes at ``bpm`` (GetMediaSourceLength returns
        lengthIsQN=true for MIDI).
        """
        if path is None:
            source = Source("MIDI", "", length * bpm / 60.0, 0, 0, length_is_qn=True)
        else:
            source = self.make_source(path, "MIDI")
        item = self.add_item(track, position, length, **item_kwargs)
        self.add_take(item, source, name=take_name)
        return item

    def add_empty_item(
        self, track: Track, position: float = 0.0, length: float = 1.0, **item_kwargs: Any
    ) -> Item:
        """An "empty item" (Insert > Empty item): no takes, just position/length/notes."""
        return self.add_item(track, position, length, **item_kwargs)

    def add_empty_take(self, item: Item, *, active: bool = True) -> Take:
        """A take with an EMPTY source, as AddTakeToMediaItem creates."""
        return self.add_take(item, Source("EMPTY"), name="", active=active)

    def add_take_fx(self, take: Take, name: str, params: Iterable[float] = (0.5,)) -> int:
        """Append an FX to the take's FX chain (as the user would); returns its index."""
        take.fx.append({"name": name, "params": [float(p) for p in params], "enabled": True})
        return len(take.fx) - 1

    def add_take_envelope(
        self, take: Take, name: str, points: Iterable[tuple[float, float]] = ()
    ) -> Envelope:
        """Show the take's Volume/Pan/Mute/Pitch envelope (Take > Take envelopes) with points."""
        envelope = take.envelope(name) or Envelope(take, name, TAKE_ENVELOPES[name])
        if envelope not in take.envelopes:
            take.envelopes.append(envelope)
        envelope.points = [(float(t), float(v), 0, 0.0, False) for t, v in points]
        return envelope

    def add_fx_envelope(
        self, take: Take, fx: int, param: int, points: Iterable[tuple[float, float]] = ()
    ) -> Envelope:
        """An envelope on parameter ``param`` of the take's FX ``fx``."""
        envelope = self._fx_envelope(take, fx, param, create=True)
        assert envelope is not None
        envelope.points = [(float(t), float(v), 0, 0.0, False) for t, v in points]
        return envelope

    def add_stretch_marker(self, take: Take, pos: float, srcpos: float, slope: float = 0.0) -> None:
        """A stretch marker at ``pos`` (item seconds before playrate) on source ``srcpos``."""
        take.stretch_markers.append([float(pos), float(srcpos), float(slope)])
        take.stretch_markers.sort(key=lambda m: m[0])

    def select_items(self, *items: Item, exclusive: bool = True) -> None:
        """Select ``items`` (and, by default, deselect every other item)."""
        if exclusive:
            for item in self.project.items():
                item.selected = False
        for item in items:
            item.selected = True

    # ---------------------------------------------------------------- inspectors

    @property
    def tracks(self) -> list[Track]:
        return list(self.project.tracks)

    def items(self, track: Track | None = None) -> list[Item]:
        """Items of ``track``, or of the whole project in REAPER's order."""
        return list(track.items) if track is not None else self.project.items()

    def selected_items(self) -> list[Item]:
        return [item for item in self.project.items() if item.selected]

    def track_summary(self) -> list[dict[str, Any]]:
        """Each track in order: index, name, folder depth, nesting level, parent, colour, mute."""
        return [
            {
                "index": track.index,
                "name": track.name,
                "folder_depth": track.folder_depth,
                "level": level,
                "parent": parent.name if parent is not None else None,
                "color": track.color,
                "mute": track.mute,
                "items": len(track.items),
            }
            for track, parent, level in self.project._walk()
        ]

    def track_tree(self) -> list[str]:
        """Track names indented two spaces per folder level: easy to compare in a test."""
        return ["  " * level + track.name for track, _, level in self.project._walk()]

    def find_track(self, name: str) -> Track:
        """The only track named ``name`` (AssertionError if none or several)."""
        found = [t for t in self.project.tracks if t.name == name]
        assert len(found) == 1, f"{len(found)} tracks named {name!r}: {self.track_tree()}"
        return found[0]

    @property
    def undo_history(self) -> list[str]:
        return [p.description for p in self.undo_points]

    @property
    def console_text(self) -> str:
        """The console as shown: messages since the last clear ("" or ClearConsole)."""
        text = ""
        for msg in self.console:
            text = "" if msg == "" else text + msg.removeprefix("!SHOW:")
        return text

    # ---------------------------------------------------------------- running scripts

    def _new_lua(self) -> Any:
        lua = LuaRuntime(
            encoding=None,
            unpack_returned_tuples=True,
            register_eval=False,
            register_builtins=False,
            attribute_filter=self._deny_attribute,
        )
        lua.globals()[b"python"] = None
        return lua

    @staticmethod
    def _deny_attribute(obj: Any, attr: Any, is_setting: bool) -> Any:
        raise AttributeError(
            f"attempt to index a {lua_type_name(obj)} (REAPER pointers are opaque userdata)"
        )

    def run_script(
        self, path: str | os.PathLike[str], *, command_id: int | None = None
    ) -> ScriptRun:
        """Load and run a .lua file's main chunk with ``reaper`` and ``gfx`` as globals.

        Each call is a new script instance with its own Lua 5.4 state (as in REAPER); project,
        ExtState and dialogs are shared. If the chunk deferred nothing the script ends here
        (atexit handlers run); otherwise drive it with run_defer(). A Lua error raises
        LuaScriptError with the Lua traceback.
        """
        script = os.path.abspath(os.fspath(path))
        if command_id is None:
            command_id = self._next_command_id
            self._next_command_id += 1
        run = ScriptRun(script, self._new_lua(), command_id)
        support = run.lua.globals()[b"load"](_LUA_SUPPORT, b"=fake_reaper")()
        run.call = support[b"call"]
        run.gfx_table = self._install(run, support)
        self.runs.append(run)
        self._current = run
        result = support[b"run_file"](to_lua_str(script))
        self._raise_if_failed(run, result)
        if not run.queue:
            self._finish(run)
        return run

    def _install(self, run: ScriptRun, support: Any) -> Any:
        """Build this run's ``reaper`` and ``gfx`` tables from the registered implementations."""
        lua = run.lua
        tables = {"reaper": lua.table(), "gfx": lua.table()}
        for name, impl in self._impls.items():
            prefix, short = name.split(".", 1)
            tables[prefix][to_lua_str(short)] = support[b"wrap"](self._dispatch(run, name, impl))
        for var, value in _GFX_VARIABLES.items():
            tables["gfx"][to_lua_str(var)] = value
        for prefix, table in tables.items():
            support[b"guard"](table, to_lua_str(prefix + "."), self._classifier(prefix))
            lua.globals()[to_lua_str(prefix)] = table
        return tables["gfx"]

    def _classifier(self, prefix: str) -> Callable[[Any], bytes]:
        def classify(key: Any) -> bytes:
            name = f"{prefix}.{from_lua_str(key) if isinstance(key, bytes) else key}"
            if name in self.api:
                return b"api"
            if prefix == "gfx":
                return to_lua_str(f"REAPER has no function or variable {name}")
            return to_lua_str(f"REAPER has no function {name}")

        return classify

    def _dispatch(self, run: ScriptRun, name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
        """The Python side of one Lua API function: arity, argument types, return conventions."""
        spec = self.api[name]
        params = spec["params"]
        returns = _RETURN_OVERRIDES.get(name, spec["returns"])
        if params is None and not returns:
            returns = None
        fewest, most = arity(spec)
        signature = inspect.signature(impl)

        def call(*args: Any) -> tuple[Any, ...]:
            self._current = run
            try:
                if params is None:
                    converted = [from_lua_str(a) if isinstance(a, bytes) else a for a in args]
                    try:
                        signature.bind(*converted)
                    except TypeError as exc:
                        raise ReaperError(f"bad arguments: {exc}") from exc
                else:
                    if not fewest <= len(args) <= most:  # type: ignore[operator]
                        counts = f"{fewest}" if fewest == most else f"{fewest} to {most}"
                        names = ", ".join(p["name"] for p in params)
                        raise ReaperError(
                            f"expected {counts} argument{'s' if most != 1 else ''} ({names}), "
                            f"got {len(args)}"
                        )
                    converted = [
                        self._convert(p, a, i)
                        for i, (p, a) in enumerate(zip(params, args, strict=False))
                    ]
                    converted += [None] * (len(params) - len(converted))
                result = impl(*converted)
                return (True, *self._returns(name, returns, result))
            except ReaperError as exc:
                return False, to_lua_str(f"{name}: {exc}")

        return call

    def _convert(self, param: dict[str, Any], value: Any, index: int) -> Any:
        """A Lua argument as the Python implementation wants it, or ReaperError."""
        kind, label = param["type"], f"argument {index + 1} ({param['name']})"
        if kind == "boolean":
            return lua_truthy(value)
        if value is None and param["optional"]:
            return None
        if kind == "string":
            if isinstance(value, bytes):
                return from_lua_str(value)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return lua_number_to_str(value)
        elif kind in ("integer", "number"):
            if isinstance(value, bytes):
                with contextlib.suppress(ValueError):
                    value = float(value)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return int(value) if kind == "integer" else float(value)
        elif kind == "ReaProject":
            if value is None or value == 0:
                return self.project
            if isinstance(value, Project):
                if value.deleted:
                    raise ReaperError(f"{label} is a closed project (check with ValidatePtr)")
                return value
        elif kind in _POINTER_TYPES:
            if isinstance(value, _POINTER_TYPES[kind]):
                if value.deleted:
                    raise ReaperError(f"{label} is a deleted {kind}")
                return value
        else:
            return value
        raise ReaperError(f"{label} must be a {kind}, got {lua_type_name(value)}")

    @staticmethod
    def _returns(name: str, types: list[str] | None, result: Any) -> tuple[Any, ...]:
        """Return values coerced to the documented Lua types (float for "number"...).

        Functions documented without a parameter list (gfx.*) have no return list either:
        their values pass through (a tuple gives several, None gives none).
        """
        if types is None:
            values = result if isinstance(result, tuple) else (result,)
            return tuple(
                to_lua_str(v) if isinstance(v, str) else v
                for v in values
                if v is not None or len(values) > 1
            )
        if not types:
            return ()
        values = (result,) if len(types) == 1 else result
        if not isinstance(values, tuple) or len(values) != len(types):
            raise TypeError(f"fake {name} must return {len(types)} values, got {result!r}")
        out: list[Any] = []
        for kind, value in zip(types, values, strict=True):
            if value is None:
                out.append(None)
            elif kind == "number":
                out.append(float(value))
            elif kind == "integer":
                out.append(int(value))
            elif kind == "boolean":
                out.append(bool(value))
            elif kind == "string":
                out.append(to_lua_str(value))
            else:
                out.append(value)
        return tuple(out)

    def _raise_if_failed(self, run: ScriptRun, result: Any) -> None:
        values = result if isinstance(result, tuple) else (result,)
        if values[0]:
            return
        error = self._script_error(run, values[1] if len(values) > 1 else None)
        try:  # the script ends: REAPER still runs its atexit handlers
            self._stop(run, run_atexit=True)
        except Exception as atexit_error:
            raise error from atexit_error
        raise error

    @staticmethod
    def _script_error(run: ScriptRun, error: Any, where: str = "") -> BaseException:
        """The Python exception for a Lua error value (a traceback string, or a Python
        exception raised inside Lua, paired with the Lua traceback where it happened)."""
        if _lupa.lua_type(error) == "table":
            exc, trace = error[1], from_lua_str(error[2])
            wrapped = LuaScriptError(
                f"{run.path}: Python error{where}: {type(exc).__name__}: {exc}\n{trace}"
            )
            wrapped.__cause__ = exc if isinstance(exc, BaseException) else None
            return wrapped
        text = from_lua_str(error) if isinstance(error, bytes) else repr(error)
        return LuaScriptError(f"{run.path}: Lua error{where}:\n{text}")

    def _finish(self, run: ScriptRun) -> None:
        """The script ended: run its atexit handlers, then check it left REAPER tidy."""
        self._stop(run, run_atexit=True)

    def _stop(self, run: ScriptRun, *, run_atexit: bool) -> None:
        if not run.running:
            return
        run.running = False
        run.queue.clear()
        handlers, run.atexit = run.atexit, []
        failure: Any = None
        if run_atexit:
            self._current = run
            for fn in handlers:
                result = run.call(fn)
                values = result if isinstance(result, tuple) else (result,)
                if not values[0] and failure is None:
                    failure = values
        if self._undo_depth:
            self.problems.append(f"{run.path}: ended inside an undo block")
        if self.prevent_ui_refresh:
            self.problems.append(
                f"{run.path}: ended with PreventUIRefresh at {self.prevent_ui_refresh}"
            )
        if failure is not None:
            error = failure[1] if len(failure) > 1 else None
            raise self._script_error(run, error, " in atexit handler")

    @property
    def running(self) -> list[ScriptRun]:
        return [run for run in self.runs if run.running]

    def run_defer(
        self,
        max_steps: int | None = None,
        until: Callable[[], bool] | None = None,
        sleep: float = 0.02,
        timeout: float | None = 60.0,
    ) -> int:
        """Drive deferred functions like REAPER's ~30 Hz timer; returns the steps run.

        Each step calls, for every running script, the functions deferred during the
        previous step (new defers wait for the next step), after applying queued mouse
        input. Stops when no script has anything deferred (atexit handlers then run), when
        ``until()`` is true (checked before every step), or after ``max_steps`` steps.
        Raises TimeoutError after ``timeout`` seconds: a script that never ends is a bug.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        steps = 0
        while True:
            if until is not None and until():
                return steps
            running = self.running
            if not running or (max_steps is not None and steps >= max_steps):
                return steps
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"defer loop still running after {timeout}s: {running}")
            for run in running:
                self._step(run)
            steps += 1
            if sleep and self.running:
                time.sleep(sleep)

    def _step(self, run: ScriptRun) -> None:
        window = run.gfx
        if window.inputs:
            x, y, cap = window.inputs.popleft()
            run.gfx_table[b"mouse_x"], run.gfx_table[b"mouse_y"] = x, y
            run.gfx_table[b"mouse_cap"] = cap
        callbacks, run.queue = run.queue, []
        run.steps += 1
        for fn in callbacks:
            self._current = run
            self._raise_if_failed(run, run.call(fn))
        if not run.queue:
            self._finish(run)

    def stop_script(self, run: ScriptRun | None = None) -> None:
        """Terminate a running script as the user would (its atexit handlers run)."""
        for target in [run] if run is not None else self.running:
            self._finish(target)

    def restart_reaper(self) -> None:
        """Quit and restart REAPER: scripts end, only persisted ExtState survives."""
        self.stop_script()
        self.ext_state = dict(self.persistent_ext_state)

    def close(self) -> None:
        """Test teardown: end running scripts and kill leftover background processes."""
        try:
            for run in self.running:
                self._stop(run, run_atexit=True)
        finally:
            self.kill_background()

    def __enter__(self) -> FakeReaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- background processes

    def wait_background(self, timeout: float = 30.0) -> list[int]:
        """Wait for every background process to exit; their return codes."""
        return [bg.popen.wait(timeout=timeout) for bg in self.background]

    def kill_background(self) -> None:
        """Terminate (then kill) background processes and their process groups."""
        for bg in self.background:
            if bg.popen.poll() is None:
                self._signal_group(bg.popen, signal.SIGTERM)
                try:
                    bg.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._signal_group(bg.popen, signal.SIGKILL)
                    bg.popen.wait(timeout=5)

    @staticmethod
    def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
        try:
            if hasattr(os, "killpg"):
                os.killpg(popen.pid, sig)
            else:  # pragma: no cover - Windows
                popen.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    # ---------------------------------------------------------------- gfx, test side

    @property
    def window(self) -> GfxWindow:
        """The gfx window of the latest script that called gfx.init."""
        for run in reversed(self.runs):
            if run.gfx.initialised:
                return run.gfx
        raise AssertionError("no script has opened a gfx window")

    def _window_run(self) -> ScriptRun:
        for run in reversed(self.runs):
            if run.gfx.initialised:
                return run
        raise AssertionError("no script has opened a gfx window")

    @property
    def frames(self) -> list[Frame]:
        return self.window.all_frames()

    def drawn_texts(self, frame: int | None = None) -> list[str]:
        """Strings drawn with gfx.drawstr/drawnumber: all frames, or frame ``frame`` (-1 last)."""
        frames = self.frames
        if frame is not None:
            frames = [frames[frame]] if frames else []
        return [text for f in frames for text in f.texts]

    def find_text(self, substring: str) -> DrawnText:
        """The most recently drawn text containing ``substring`` (to locate a button)."""
        for frame in reversed(self.frames):
            for op in reversed(frame.ops):
                if op.text is not None and substring in op.text.text:
                    return op.text
        raise AssertionError(f"{substring!r} was never drawn; drawn: {self.drawn_texts()}")

    def click(self, x: float, y: float) -> None:
        """Press the left button at (x, y) for one defer step, then release it."""
        window = self.window
        window.inputs.append((x, y, 1))
        window.inputs.append((x, y, 0))

    def click_text(self, substring: str) -> None:
        """Click the middle of the latest drawn text containing ``substring``."""
        self.click(*self.find_text(substring).center)

    def press_key(self, key: str | int) -> None:
        """Queue a key for gfx.getchar() (a character, or REAPER's numeric key code)."""
        self.window.keys.append(ord(key) if isinstance(key, str) else key)

    def close_window(self) -> None:
        """The user closes the gfx window: gfx.getchar() returns -1 from now on."""
        self.window.open = False

    # ---------------------------------------------------------------- helpers for impls

    def _changed(self, what: str) -> None:
        """Record a project change, inside the open undo block or as an untracked change."""
        self.project.dirty = True
        if self._undo_depth:
            self._undo_changes.append(what)
        else:
            self.changes_outside_undo.append(what)

    @staticmethod
    def _check_param(name: str, known: dict[str, float], what: str) -> None:
        if name.startswith("P_"):
            raise ReaperError(f"pointer parameter {name} is not implemented in the fake")
        if name not in known:
            raise ReaperError(
                f"unknown {what} parameter {name!r} (REAPER would silently return 0; if REAPER "
                "documents it, add it to the fake's table)"
            )

    def _native(self, r: int, g: int, b: int) -> int:
        if self.os_name.startswith("Win"):
            return (r & 255) | (g & 255) << 8 | (b & 255) << 16
        return (r & 255) << 16 | (g & 255) << 8 | (b & 255)

    def _all_takes(self) -> list[Take]:
        return [t for p in self.projects for i in p.items() for t in i.takes]

    def _run(self) -> ScriptRun:
        assert self._current is not None, "API function called outside a script"
        return self._current

    def _is_lua_function(self, value: Any) -> bool:
        return _lupa.lua_type(value) == "function"

    # ================================================================ reaper.* : items

    @api("reaper.CountMediaItems")
    def _CountMediaItems(self, proj: Project) -> int:
        return len(proj.items())

    @api("reaper.GetMediaItem")
    def _GetMediaItem(self, proj: Project, idx: int) -> Item | None:
        items = proj.items()
        return items[idx] if 0 <= idx < len(items) else None

    @api("reaper.CountSelectedMediaItems")
    def _CountSelectedMediaItems(self, proj: Project) -> int:
        return sum(1 for item in proj.items() if item.selected)

    @api("reaper.GetSelectedMediaItem")
    def _GetSelectedMediaItem(self, proj: Project, idx: int) -> Item | None:
        selected = [item for item in proj.items() if item.selected]
        return selected[idx] if 0 <= idx < len(selected) else None

    @api("reaper.CountTrackMediaItems")
    def _CountTrackMediaItems(self, track: Track) -> int:
        return len(track.items)

    @api("reaper.GetTrackNumMediaItems")
    def _GetTrackNumMediaItems(self, track: Track) -> int:
        return len(track.items)

    @api("reaper.GetTrackMediaItem")
    def _GetTrackMediaItem(self, track: Track, idx: int) -> Item | None:
        return track.items[idx] if 0 <= idx < len(track.items) else None

    @api("reaper.GetMediaItem_Track")
    def _GetMediaItem_Track(self, item: Item) -> Track:
        return item.track

    @api("reaper.GetItemProjectContext")
    def _GetItemProjectContext(self, item: Item) -> Project:
        return item.track.project

    @api("reaper.GetMediaItemInfo_Value")
    def _GetMediaItemInfo_Value(self, item: Item, parm: str) -> float:
        self._check_param(parm, ITEM_PARAMS, "item")
        return item.get(parm)

    @api("reaper.SetMediaItemInfo_Value")
    def _SetMediaItemInfo_Value(self, item: Item, parm: str, value: float) -> bool:
        self._check_param(parm, ITEM_PARAMS, "item")
        if parm in ITEM_READONLY:
            return False
        item.set(parm, value)
        self._changed(f"item {parm}={value:g}")
        return True

    @api("reaper.SetMediaItemPosition")
    def _SetMediaItemPosition(self, item: Item, position: float, refresh: bool) -> bool:
        return self._SetMediaItemInfo_Value(item, "D_POSITION", position)

    @api("reaper.SetMediaItemLength")
    def _SetMediaItemLength(self, item: Item, length: float, refresh: bool) -> bool:
        return self._SetMediaItemInfo_Value(item, "D_LENGTH", length)

    @api("reaper.GetSetMediaItemInfo_String")
    def _GetSetMediaItemInfo_String(
        self, item: Item, parm: str, value: str, set_new: bool
    ) -> tuple[bool, str]:
        if parm == "P_NOTES":
            if set_new:
                item.notes = value
                self._changed("item P_NOTES")
            return True, item.notes
        if parm == "GUID":
            if set_new:
                item.guid = value
                self._changed("item GUID")
            return True, item.guid
        return self._ext(item, parm, value, set_new, "item")

    def _ext(self, obj: Any, parm: str, value: str, set_new: bool, what: str) -> tuple[bool, str]:
        """P_EXT:key strings. Fake choice: getting an unset key answers (false, "")."""
        if not parm.startswith("P_EXT:") or len(parm) == len("P_EXT:"):
            raise ReaperError(f"unknown {what} string parameter {parm!r}")
        key = parm[len("P_EXT:") :]
        if set_new:
            obj.ext[key] = value
            self._changed(f"{what} {parm}")
            return True, value
        if key in obj.ext:
            return True, obj.ext[key]
        return False, ""

    @api("reaper.IsMediaItemSelected")
    def _IsMediaItemSelected(self, item: Item) -> bool:
        return item.selected

    @api("reaper.SetMediaItemSelected")
    def _SetMediaItemSelected(self, item: Item, selected: bool) -> None:
        item.selected = selected
        self._changed("item selection")

    @api("reaper.SelectAllMediaItems")
    def _SelectAllMediaItems(self, proj: Project, selected: bool) -> None:
        for item in proj.items():
            item.selected = selected
        self._changed("item selection")

    @api("reaper.AddMediaItemToTrack")
    def _AddMediaItemToTrack(self, track: Track) -> Item:
        """A new item at 0 s, length 0, no takes, not selected (fake choice: no default fades)."""
        item = Item(track)
        track.items.append(item)
        self._changed("add item")
        return item

    @api("reaper.DeleteTrackMediaItem")
    def _DeleteTrackMediaItem(self, track: Track, item: Item) -> bool:
        if item.track is not track:
            return False
        track.items.remove(item)
        item.deleted = True
        for take in item.takes:
            take.deleted = True
        self._changed("delete item")
        return True

    @api("reaper.MoveMediaItemToTrack")
    def _MoveMediaItemToTrack(self, item: Item, dest: Track) -> bool:
        item.track.items.remove(item)
        dest.items.append(item)
        item.track = dest
        self._changed("move item")
        return True

    # ================================================================ reaper.* : takes

    @api("reaper.CountTakes")
    def _CountTakes(self, item: Item) -> int:
        return len(item.takes)

    @api("reaper.GetMediaItemNumTakes")
    def _GetMediaItemNumTakes(self, item: Item) -> int:
        return len(item.takes)

    @api("reaper.GetTake")
    def _GetTake(self, item: Item, idx: int) -> Take | None:
        return item.takes[idx] if 0 <= idx < len(item.takes) else None

    @api("reaper.GetActiveTake")
    def _GetActiveTake(self, item: Item) -> Take | None:
        return item.active_take

    @api("reaper.SetActiveTake")
    def _SetActiveTake(self, take: Take) -> None:
        take.item.active_take_index = take.item.takes.index(take)
        self._changed("active take")

    @api("reaper.AddTakeToMediaItem")
    def _AddTakeToMediaItem(self, item: Item) -> Take:
        """A take with an EMPTY source. Fake choice: it becomes active only if it is the first."""
        take = Take(item, Source("EMPTY"))
        item.takes.append(take)
        if len(item.takes) == 1:
            item.active_take_index = 0
        self._changed("add take")
        return take

    @api("reaper.GetMediaItemTake_Item")
    def _GetMediaItemTake_Item(self, take: Take) -> Item:
        return take.item

    @api("reaper.GetMediaItemTake_Track")
    def _GetMediaItemTake_Track(self, take: Take) -> Track:
        return take.item.track

    @api("reaper.GetMediaItemTakeInfo_Value")
    def _GetMediaItemTakeInfo_Value(self, take: Take, parm: str) -> float:
        self._check_param(parm, TAKE_PARAMS, "take")
        return take.get(parm)

    @api("reaper.SetMediaItemTakeInfo_Value")
    def _SetMediaItemTakeInfo_Value(self, take: Take, parm: str, value: float) -> bool:
        self._check_param(parm, TAKE_PARAMS, "take")
        if parm in TAKE_READONLY:
            return False
        take.set(parm, value)
        self._changed(f"take {parm}={value:g}")
        return True

    @api("reaper.GetSetMediaItemTakeInfo_String")
    def _GetSetMediaItemTakeInfo_String(
        self, take: Take, parm: str, value: str, set_new: bool
    ) -> tuple[bool, str]:
        if parm == "P_NAME":
            if set_new:
                take.name = value
                self._changed("take P_NAME")
            return True, take.name
        if parm == "GUID":
            if set_new:
                take.guid = value
                self._changed("take GUID")
            return True, take.guid
        return self._ext(take, parm, value, set_new, "take")

    @api("reaper.GetTakeName")
    def _GetTakeName(self, take: Take) -> str:
        return take.name

    @api("reaper.TakeIsMIDI")
    def _TakeIsMIDI(self, take: Take) -> bool:
        return take.source.root.type == "MIDI"

    @api("reaper.GetMediaItemTake_Source")
    def _GetMediaItemTake_Source(self, take: Take) -> Source:
        return take.source

    @api("reaper.SetMediaItemTake_Source")
    def _SetMediaItemTake_Source(self, take: Take, source: Source) -> bool:
        """Documented: a source already used in the project is duplicated before being set."""
        in_use = any(t.source is source for t in self._all_takes())
        if in_use:
            source = Source(**{f: getattr(source, f) for f in source.__dataclass_fields__})
        take.source = source
        self._changed("take source")
        return True

    @api("reaper.GetMediaItemTakeByGUID")
    def _GetMediaItemTakeByGUID(self, proj: Project, guid: str) -> Take | None:
        takes = (t for i in proj.items() for t in i.takes if t.guid.upper() == guid.upper())
        return next(takes, None)

    # ================================================================ reaper.* : sources

    @api("reaper.GetMediaSourceType")
    def _GetMediaSourceType(self, source: Source) -> str:
        return source.type

    @api("reaper.GetMediaSourceParent")
    def _GetMediaSourceParent(self, source: Source) -> Source | None:
        return source.parent

    @api("reaper.GetMediaSourceFileName")
    def _GetMediaSourceFileName(self, source: Source) -> str:
        """The file; "" for in-project MIDI and (fake choice) SECTION sources: see the parent."""
        return source.filename

    @api("reaper.GetMediaSourceLength")
    def _GetMediaSourceLength(self, source: Source) -> tuple[float, bool]:
        return source.length, source.length_is_qn

    @api("reaper.GetMediaSourceSampleRate")
    def _GetMediaSourceSampleRate(self, source: Source) -> int:
        return 0 if source.root.type == "MIDI" else source.samplerate

    @api("reaper.GetMediaSourceNumChannels")
    def _GetMediaSourceNumChannels(self, source: Source) -> int:
        return source.channels

    @api("reaper.PCM_Source_GetSectionInfo")
    def _PCM_Source_GetSectionInfo(self, source: Source) -> tuple[bool, float, float, bool]:
        """(true, offset, length, reverse) for SECTION sources; fake choice otherwise:
        (false, 0, source length, false)."""
        if source.type == "SECTION":
            return True, source.section_offset, source.section_length, source.reverse
        return False, 0.0, source.length, False

    @api("reaper.PCM_Source_CreateFromFile")
    def _PCM_Source_CreateFromFile(self, filename: str) -> Source:
        """Fake choice: a missing/unreadable file still gives a source, of length 0 (offline)."""
        return self.make_source(filename)

    @api("reaper.PCM_Source_CreateFromFileEx")
    def _PCM_Source_CreateFromFileEx(self, filename: str, no_midi_import: bool) -> Source:
        return self.make_source(filename)

    @api("reaper.PCM_Source_Destroy")
    def _PCM_Source_Destroy(self, source: Source) -> None:
        if any(t.source is source for t in self._all_takes()):
            raise ReaperError("source is still used by a take (REAPER would crash later)")
        source.destroyed = True

    # ================================================================ reaper.* : take FX

    @api("reaper.TakeFX_GetCount")
    def _TakeFX_GetCount(self, take: Take) -> int:
        return len(take.fx)

    @api("reaper.TakeFX_GetFXName")
    def _TakeFX_GetFXName(self, take: Take, fx: int) -> tuple[bool, str]:
        if 0 <= fx < len(take.fx):
            return True, take.fx[fx]["name"]
        return False, ""

    @api("reaper.TakeFX_CopyToTake")
    def _TakeFX_CopyToTake(
        self, src_take: Take, src_fx: int, dest_take: Take, dest_fx: int, is_move: bool
    ) -> None:
        """Copy (or move) one FX, with its parameter values, to ``dest_fx`` (clamped to the
        end of the chain). Fake choices: an invalid ``src_fx`` does nothing; container
        addressing (0x2000000) is not modelled; the FX's parameter envelopes stay behind
        (copy them with TakeFX_GetEnvelope + SetEnvelopeStateChunk)."""
        if not 0 <= src_fx < len(src_take.fx):
            return
        fx = src_take.fx[src_fx]
        copy = {**fx, "params": list(fx["params"])}
        if is_move:
            src_take.fx.pop(src_fx)
        dest_take.fx.insert(max(0, min(dest_fx, len(dest_take.fx))), copy)
        self._changed("take FX copy")

    def _fx_envelope(self, take: Take, fx: int, param: int, create: bool) -> Envelope | None:
        found = next(
            (e for e in take.envelopes if e.fx == fx and e.param == param and not e.removed), None
        )
        if found is None and create and 0 <= fx < len(take.fx):
            if not 0 <= param < len(take.fx[fx]["params"]):
                return None
            name = f"Param {param + 1} / {take.fx[fx]['name']}"
            found = Envelope(take, name, "PARMENV", fx, param)
            take.envelopes.append(found)
        return found

    @api("reaper.TakeFX_GetEnvelope")
    def _TakeFX_GetEnvelope(
        self, take: Take, fxindex: int, parameterindex: int, create: bool
    ) -> Envelope | None:
        """The FX parameter envelope; created (empty, active) when missing and create=true."""
        envelope = self._fx_envelope(take, fxindex, parameterindex, create)
        if envelope is not None and create:
            envelope.active = True
            self._changed("take FX envelope")
        return envelope

    # ================================================================ reaper.* : envelopes

    @api("reaper.CountTakeEnvelopes")
    def _CountTakeEnvelopes(self, take: Take) -> int:
        return len([e for e in take.envelopes if not e.removed])

    @api("reaper.GetTakeEnvelope")
    def _GetTakeEnvelope(self, take: Take, envidx: int) -> Envelope | None:
        envelopes = [e for e in take.envelopes if not e.removed]
        return envelopes[envidx] if 0 <= envidx < len(envelopes) else None

    @api("reaper.GetTakeEnvelopeByName")
    def _GetTakeEnvelopeByName(self, take: Take, envname: str) -> Envelope | None:
        """Volume, Pan, Mute, Pitch (or an FX envelope's name); nil when the take has none:
        a script cannot create a built-in take envelope with this call."""
        return take.envelope(envname)

    @api("reaper.GetEnvelopeName")
    def _GetEnvelopeName(self, env: Envelope) -> tuple[bool, str]:
        return True, env.name

    @api("reaper.Envelope_GetParentTake")
    def _Envelope_GetParentTake(self, env: Envelope) -> tuple[Take, int, int]:
        return env.take, env.fx, env.param

    @api("reaper.GetEnvelopeStateChunk")
    def _GetEnvelopeStateChunk(self, env: Envelope, text: str, isundo: bool) -> tuple[bool, str]:
        return True, env.chunk()

    @api("reaper.SetEnvelopeStateChunk")
    def _SetEnvelopeStateChunk(self, env: Envelope, text: str, isundo: bool) -> bool:
        if not env.apply_chunk(text):
            return False
        self._changed(f"envelope {env.name}")
        return True

    # ================================================================ reaper.* : stretch markers

    @staticmethod
    def _source_at(take: Take, pos: float) -> float:
        """Fake choice: source position at ``pos``: linear between markers, rate 1 (pos is
        before playrate) outside them, startoffs + pos without markers."""
        markers = take.stretch_markers
        if not markers:
            return take.startoffs + pos
        if pos <= markers[0][0]:
            return markers[0][1] - (markers[0][0] - pos)
        for (p0, s0, _), (p1, s1, _) in itertools.pairwise(markers):
            if pos <= p1:
                return s0 + (s1 - s0) * (pos - p0) / (p1 - p0) if p1 > p0 else s0
        return markers[-1][1] + (pos - markers[-1][0])

    @api("reaper.GetTakeNumStretchMarkers")
    def _GetTakeNumStretchMarkers(self, take: Take) -> int:
        return len(take.stretch_markers)

    @api("reaper.GetTakeStretchMarker")
    def _GetTakeStretchMarker(self, take: Take, idx: int) -> tuple[int, float, float]:
        """(idx, pos, srcpos); -1 when idx is not a marker. Fake choice: idx -1 (find by a
        position passed in) is not possible from Lua, where the positions are outputs only."""
        if 0 <= idx < len(take.stretch_markers):
            pos, srcpos, _ = take.stretch_markers[idx]
            return idx, pos, srcpos
        return -1, 0.0, 0.0

    @api("reaper.SetTakeStretchMarker")
    def _SetTakeStretchMarker(self, take: Take, idx: int, pos: float, srcpos: float | None) -> int:
        """idx < 0 adds a marker, idx >= 0 updates that one (the JSON's "If idx=0" lost the
        "<0 ... >" of REAPER's "If idx<0, stretch marker will be added. If idx>=0, stretch
        marker will be updated."). Without srcpos, an added marker gets the source position
        now playing at pos and an updated one keeps its own. Positions are kept between the
        neighbouring markers. Returns the marker's index, -1 if none was added/updated."""
        markers = take.stretch_markers
        if idx >= 0:
            if idx >= len(markers):
                return -1
            low = markers[idx - 1] if idx > 0 else None
            high = markers[idx + 1] if idx + 1 < len(markers) else None
            marker = markers[idx]
        else:
            if any(abs(m[0] - pos) < 1e-9 for m in markers):
                return -1
            if srcpos is None:
                srcpos = self._source_at(take, pos)
            low = next((m for m in reversed(markers) if m[0] < pos), None)
            high = next((m for m in markers if m[0] > pos), None)
            marker = [pos, srcpos, 0.0]
        new_pos, new_src = pos, marker[1] if srcpos is None else srcpos
        if low is not None:
            new_pos, new_src = max(new_pos, low[0]), max(new_src, low[1])
        if high is not None:
            new_pos, new_src = min(new_pos, high[0]), min(new_src, high[1])
        marker[0], marker[1] = new_pos, new_src
        if idx < 0:
            markers.append(marker)
            markers.sort(key=lambda m: m[0])
        self._changed("stretch marker")
        return markers.index(marker)

    @api("reaper.GetTakeStretchMarkerSlope")
    def _GetTakeStretchMarkerSlope(self, take: Take, idx: int) -> float:
        """The slope of the segment starting at marker idx (-1..1); 0 for no such marker."""
        if 0 <= idx < len(take.stretch_markers):
            return take.stretch_markers[idx][2]
        return 0.0

    @api("reaper.SetTakeStretchMarkerSlope")
    def _SetTakeStretchMarkerSlope(self, take: Take, idx: int, slope: float) -> bool:
        """Fake choice: false for no such marker; the slope is clamped to -1..1."""
        if not 0 <= idx < len(take.stretch_markers):
            return False
        take.stretch_markers[idx][2] = max(-1.0, min(1.0, slope))
        self._changed("stretch marker slope")
        return True

    # ================================================================ reaper.* : state chunks

    def _item_chunk(self, item: Item) -> str:
        """An item's RPPXML, as REAPER writes it (Fake choice: fewer lines)."""
        v = item.values
        lines = [
            "<ITEM",
            f"POSITION {_num_text(v['D_POSITION'])}",
            f"SNAPOFFS {_num_text(v['D_SNAPOFFSET'])}",
            f"LENGTH {_num_text(v['D_LENGTH'])}",
            f"LOOP {int(v['B_LOOPSRC'])}",
            f"ALLTAKES {int(v['B_ALLTAKESPLAY'])}",
            f"FADEIN {int(v['C_FADEINSHAPE'])} {_num_text(v['D_FADEINLEN'])} 0",
            f"FADEOUT {int(v['C_FADEOUTSHAPE'])} {_num_text(v['D_FADEOUTLEN'])} 0",
            f"MUTE {int(v['B_MUTE'])} 0",
            f"SEL {int(item.selected)}",
            f"IGUID {item.guid}",
        ]
        for index, take in enumerate(item.takes):
            t = take.values
            if index:
                lines.append("TAKE SEL" if take is item.active_take else "TAKE")
            lines += [
                f'NAME "{take.name}"',
                f"VOLPAN {_num_text(t['D_VOL'])} {_num_text(t['D_PAN'])} 1 "
                f"{_num_text(t['D_PANLAW'])}",
                f"SOFFS {_num_text(t['D_STARTOFFS'])}",
                f"PLAYRATE {_num_text(t['D_PLAYRATE'])} {int(t['B_PPITCH'])} "
                f"{_num_text(t['D_PITCH'])} {int(t['I_PITCHMODE'])} {int(t['I_STRETCHFLAGS'])} "
                f"{_num_text(t['F_STRETCHFADESIZE'])}",
                f"CHANMODE {int(t['I_CHANMODE'])}",
                f"GUID {take.guid}",
            ]
            if take.fx:
                lines.append("<TAKEFX")
                for fx in take.fx:
                    lines.append(f'FX "{fx["name"]}" ' + " ".join(map(_num_text, fx["params"])))
                for env in take.envelopes:
                    if env.fx >= 0 and not env.removed:
                        lines += env.chunk().splitlines()
                lines.append(">")
            lines += self._source_chunk(take.source)
            for env in take.envelopes:
                if env.fx < 0 and not env.removed:
                    lines += env.chunk().splitlines()
            if take.stretch_markers:
                lines.append("SM " + " + ".join(" ".join(map(_num_text, m))
                                                for m in take.stretch_markers))  # fmt: skip
        return "\n".join([*lines, ">"]) + "\n"

    def _source_chunk(self, source: Source) -> list[str]:
        if source.type == "SECTION" and source.parent is not None:
            return [
                "<SOURCE SECTION",
                f"LENGTH {_num_text(source.section_length)}",
                f"STARTPOS {_num_text(source.section_offset)}",
                f"MODE {2 if source.reverse else 0}",
                *self._source_chunk(source.parent),
                ">",
            ]
        lines = [f"<SOURCE {source.type}"]
        if source.filename:
            lines.append(f'FILE "{source.filename}"')
        return [*lines, ">"]

    @staticmethod
    def _split_envelope_blocks(text: str) -> tuple[list[str], list[list[tuple[str, str]]]]:
        """Lines without the built-in take envelope blocks, and those blocks per take as
        (chunk name, block text). Raises ValueError when the blocks are unbalanced."""
        rest: list[str] = []
        per_take: list[list[tuple[str, str]]] = [[]]
        block: list[str] | None = None
        depth = 0
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if block is not None:
                block.append(line)
                depth += line.startswith("<") - (line == ">")
                if depth == 1:
                    per_take[-1].append((block[0][1:].split()[0], "\n".join(block) + "\n"))
                    block = None
                continue
            names = tuple("<" + name for name in TAKE_ENVELOPES.values())
            if depth == 1 and line.split()[0] in names:
                block, depth = [line], 2
                continue
            if depth == 1 and line.split()[0] == "TAKE":
                per_take.append([])
            depth += line.startswith("<") - (line == ">")
            if depth < 0:
                raise ValueError("unbalanced chunk")
            rest.append(line)
        if depth != 0 or block is not None:
            raise ValueError("unbalanced chunk")
        return rest, per_take

    @api("reaper.GetItemStateChunk")
    def _GetItemStateChunk(self, item: Item, text: str, isundo: bool) -> tuple[bool, str]:
        return True, self._item_chunk(item)

    @api("reaper.SetItemStateChunk")
    def _SetItemStateChunk(self, item: Item, text: str, isundo: bool) -> bool:
        """Sets the item from RPPXML. Fake choice: the fake applies only the take envelope
        blocks (<VOLENV, <PANENV, <MUTEENV, <PITCHENV: REAPER's documented way to give a take
        a built-in envelope); any other difference from GetItemStateChunk is an error here,
        not silently ignored. False for an unbalanced chunk. Takes keep their pointers (in
        REAPER, fetch them again after this call)."""
        try:
            rest, per_take = self._split_envelope_blocks(text)
            current, _ = self._split_envelope_blocks(self._item_chunk(item))
        except ValueError:
            return False
        if rest != current:
            diff = [line for line in rest if line not in current]
            raise ReaperError(
                "the fake applies only take envelope blocks from an item chunk; other lines "
                f"changed: {diff[:3]}"
            )
        guids = {e.guid for t in self._all_takes() for e in t.envelopes if not e.removed}
        for take, blocks in zip(item.takes, per_take, strict=False):
            kept = [e for e in take.envelopes if e.fx >= 0]
            mine = {e.guid for e in take.envelopes}
            for name, block in blocks:
                label = next(k for k, v in TAKE_ENVELOPES.items() if v == name)
                envelope = Envelope(take, label, name)
                envelope.apply_chunk(block)
                for line in block.splitlines():
                    if line.startswith("EGUID ") and line.split()[1] in guids - mine:
                        self.problems.append(f"SetItemStateChunk: duplicate envelope {line}")
                kept.append(envelope)
            for old in take.envelopes:
                if old not in kept:
                    old.removed = True
            take.envelopes = kept
        self._changed("item state chunk")
        return True

    # ================================================================ reaper.* : tracks

    @api("reaper.CountTracks")
    def _CountTracks(self, proj: Project) -> int:
        return len(proj.tracks)

    @api("reaper.GetNumTracks")
    def _GetNumTracks(self) -> int:
        return len(self.project.tracks)

    @api("reaper.GetTrack")
    def _GetTrack(self, proj: Project, idx: int) -> Track | None:
        return proj.tracks[idx] if 0 <= idx < len(proj.tracks) else None

    @api("reaper.GetMasterTrack")
    def _GetMasterTrack(self, proj: Project) -> Track:
        return proj.master

    @api("reaper.InsertTrackAtIndex")
    def _InsertTrackAtIndex(self, idx: int, want_defaults: bool) -> None:
        """Insert an unnamed, depth-0 track at ``idx`` (clamped); other tracks are untouched."""
        self._insert_track(self.project, idx)

    @api("reaper.InsertTrackInProject")
    def _InsertTrackInProject(self, proj: Project, idx: int, flags: int) -> None:
        self._insert_track(proj, idx)

    def _insert_track(self, proj: Project, idx: int) -> None:
        idx = max(0, min(idx, len(proj.tracks)))
        proj.tracks.insert(idx, Track(proj))
        self._changed(f"insert track at {idx}")

    @api("reaper.DeleteTrack")
    def _DeleteTrack(self, track: Track) -> None:
        """Delete a track and its items, keeping the folder structure of the others.

        A closing depth (-N) moves to the previous track; deleting a folder parent makes its
        children top-level, so the track that closed that folder closes one level fewer.
        """
        proj = track.project
        if track.is_master:
            raise ReaperError("cannot delete the master track")
        walk = list(proj._walk())
        i = proj.tracks.index(track)
        depth = track.folder_depth
        if depth < 0 and i > 0:
            proj.tracks[i - 1].folder_depth += depth
        elif depth > 0:
            inner = walk[i][2] + 1
            level = inner
            for later in proj.tracks[i + 1 :]:
                level += later.folder_depth
                if level < inner:
                    later.folder_depth += 1
                    break
        proj.tracks.remove(track)
        track.deleted = True
        for item in track.items:
            item.deleted = True
            for take in item.takes:
                take.deleted = True
        self._changed("delete track")

    @api("reaper.GetParentTrack")
    def _GetParentTrack(self, track: Track) -> Track | None:
        return None if track.is_master else track.parent

    @api("reaper.GetTrackDepth")
    def _GetTrackDepth(self, track: Track) -> int:
        return 0 if track.is_master else track.level

    @api("reaper.GetMediaTrackInfo_Value")
    def _GetMediaTrackInfo_Value(self, track: Track, parm: str) -> float:
        self._check_param(parm, TRACK_PARAMS, "track")
        return track.get(parm)

    @api("reaper.SetMediaTrackInfo_Value")
    def _SetMediaTrackInfo_Value(self, track: Track, parm: str, value: float) -> bool:
        self._check_param(parm, TRACK_PARAMS, "track")
        if parm in TRACK_READONLY:
            return False
        track.set(parm, value)
        self._changed(f"track {parm}={value:g}")
        return True

    @api("reaper.GetSetMediaTrackInfo_String")
    def _GetSetMediaTrackInfo_String(
        self, track: Track, parm: str, value: str, set_new: bool
    ) -> tuple[bool, str]:
        if parm == "P_NAME":
            if track.is_master:
                return False, ""
            if set_new:
                track.name = value
                self._changed("track P_NAME")
            return True, track.name
        if parm == "GUID":
            if set_new:
                track.guid = value
                self._changed("track GUID")
            return True, track.guid
        if parm in TRACK_STRINGS or parm.startswith(("P_LANENAME:", "P_UI_RECT:")):
            if set_new:
                track.strings[parm] = value
                self._changed(f"track {parm}")
            return True, track.strings.get(parm, "")
        return self._ext(track, parm, value, set_new, "track")

    @api("reaper.GetTrackName")
    def _GetTrackName(self, track: Track) -> tuple[bool, str]:
        """ "MASTER" for the master track, "Track N" for an unnamed track."""
        if track.is_master:
            return True, "MASTER"
        return True, track.name or f"Track {track.number}"

    @api("reaper.GetTrackGUID")
    def _GetTrackGUID(self, track: Track) -> str:
        return track.guid

    @api("reaper.GetTrackColor")
    def _GetTrackColor(self, track: Track) -> int:
        return track.color

    @api("reaper.SetTrackColor")
    def _SetTrackColor(self, track: Track, color: int) -> None:
        track.set("I_CUSTOMCOLOR", color | 0x1000000)
        self._changed("track color")

    @api("reaper.CountSelectedTracks")
    def _CountSelectedTracks(self, proj: Project) -> int:
        return sum(1 for t in proj.tracks if t.selected)

    @api("reaper.GetSelectedTrack")
    def _GetSelectedTrack(self, proj: Project, idx: int) -> Track | None:
        selected = [t for t in proj.tracks if t.selected]
        return selected[idx] if 0 <= idx < len(selected) else None

    @api("reaper.IsTrackSelected")
    def _IsTrackSelected(self, track: Track) -> bool:
        return track.selected

    @api("reaper.SetTrackSelected")
    def _SetTrackSelected(self, track: Track, selected: bool) -> None:
        track.selected = selected
        self._changed("track selection")

    @api("reaper.SetOnlyTrackSelected")
    def _SetOnlyTrackSelected(self, track: Track) -> None:
        for other in self.project.tracks:
            other.selected = other is track
        self._changed("track selection")

    @api("reaper.ColorToNative")
    def _ColorToNative(self, r: int, g: int, b: int) -> int:
        """Windows: RGB() = r | g<<8 | b<<16; macOS/Linux (SWELL): r<<16 | g<<8 | b."""
        return self._native(r, g, b)

    @api("reaper.ColorFromNative")
    def _ColorFromNative(self, col: int) -> tuple[int, int, int]:
        if self.os_name.startswith("Win"):
            return col & 255, (col >> 8) & 255, (col >> 16) & 255
        return (col >> 16) & 255, (col >> 8) & 255, col & 255

    # ================================================================ reaper.* : undo & UI

    @api("reaper.Undo_BeginBlock")
    def _Undo_BeginBlock(self) -> None:
        """Blocks nest; the outermost pair makes one undo point."""
        self._undo_depth += 1

    @api("reaper.Undo_BeginBlock2")
    def _Undo_BeginBlock2(self, proj: Project) -> None:
        self._Undo_BeginBlock()

    @api("reaper.Undo_EndBlock")
    def _Undo_EndBlock(self, desc: str, flags: int, proj: Project | None = None) -> None:
        if self._undo_depth == 0:
            self.problems.append(f"Undo_EndBlock({desc!r}) without Undo_BeginBlock")
            return
        self._undo_depth -= 1
        if self._undo_depth == 0:
            project = proj if proj is not None else self.project
            self.undo_points.append(UndoPoint(desc, flags, self._undo_changes, project=project))
            self._undo_changes = []

    @api("reaper.Undo_EndBlock2")
    def _Undo_EndBlock2(self, proj: Project, desc: str, flags: int) -> None:
        self._Undo_EndBlock(desc, flags, proj)

    @api("reaper.Undo_OnStateChange")
    def _Undo_OnStateChange(self, desc: str) -> None:
        """An undo point made at once, holding the changes made outside blocks so far."""
        changes, self.changes_outside_undo = self.changes_outside_undo, []
        self.undo_points.append(UndoPoint(desc, -1, changes, kind="state_change"))

    @api("reaper.Undo_OnStateChange2")
    def _Undo_OnStateChange2(self, proj: Project, desc: str) -> None:
        self._Undo_OnStateChange(desc)

    @api("reaper.Undo_OnStateChangeEx")
    def _Undo_OnStateChangeEx(self, desc: str, which: int, trackparm: int) -> None:
        self._Undo_OnStateChange(desc)

    @api("reaper.Undo_CanUndo2")
    def _Undo_CanUndo2(self, proj: Project) -> str | None:
        return self.undo_points[-1].description if self.undo_points else None

    @api("reaper.PreventUIRefresh")
    def _PreventUIRefresh(self, count: int) -> None:
        self.prevent_ui_refresh += count
        if self.prevent_ui_refresh < 0:
            self.problems.append("PreventUIRefresh went below 0")

    @api("reaper.UpdateArrange")
    def _UpdateArrange(self) -> None:
        self.ui_updates.append("UpdateArrange")

    @api("reaper.UpdateTimeline")
    def _UpdateTimeline(self) -> None:
        self.ui_updates.append("UpdateTimeline")

    @api("reaper.TrackList_AdjustWindows")
    def _TrackList_AdjustWindows(self, minor: bool) -> None:
        self.ui_updates.append("TrackList_AdjustWindows")

    @api("reaper.Main_OnCommand")
    def _Main_OnCommand(self, command: int, flag: int) -> None:
        """Recorded in ``commands``, not performed."""
        self.commands.append((command, flag))
        self._changed(f"action {command}")

    @api("reaper.Main_OnCommandEx")
    def _Main_OnCommandEx(self, command: int, flag: int, proj: Project) -> None:
        self._Main_OnCommand(command, flag)

    @api("reaper.IsProjectDirty")
    def _IsProjectDirty(self, proj: Project) -> int:
        return int(proj.dirty)

    @api("reaper.MarkProjectDirty")
    def _MarkProjectDirty(self, proj: Project) -> None:
        proj.dirty = True

    @api("reaper.GetCursorPosition")
    def _GetCursorPosition(self) -> float:
        return self.project.cursor

    @api("reaper.GetPlayState")
    def _GetPlayState(self) -> int:
        return 0

    # ================================================================ reaper.* : ExtState

    @api("reaper.SetExtState")
    def _SetExtState(self, section: str, key: str, value: str, persist: bool) -> None:
        self.ext_state[section, key] = value
        if persist:
            if "\n" in value:
                self.problems.append(f"SetExtState({section!r}, {key!r}): newline with persist")
            self.persistent_ext_state[section, key] = value

    @api("reaper.GetExtState")
    def _GetExtState(self, section: str, key: str) -> str:
        return self.ext_state.get((section, key), "")

    @api("reaper.HasExtState")
    def _HasExtState(self, section: str, key: str) -> bool:
        return (section, key) in self.ext_state

    @api("reaper.DeleteExtState")
    def _DeleteExtState(self, section: str, key: str, persist: bool) -> None:
        self.ext_state.pop((section, key), None)
        if persist:
            self.persistent_ext_state.pop((section, key), None)

    # ================================================================ reaper.* : paths, OS

    @api("reaper.GetResourcePath")
    def _GetResourcePath(self) -> str:
        return str(self.resource_path)

    @api("reaper.GetProjectPath")
    def _GetProjectPath(self) -> str:
        return self.project.record_path

    @api("reaper.GetProjectPathEx")
    def _GetProjectPathEx(self, proj: Project) -> str:
        return proj.record_path

    @api("reaper.GetProjectName")
    def _GetProjectName(self, proj: Project) -> str:
        return os.path.basename(proj.file) if proj.file else ""

    @api("reaper.EnumProjects")
    def _EnumProjects(self, idx: int) -> tuple[Project | None, str]:
        """-1: the active project; 0..n-1: the open tabs in order; with the .rpp path ("" when
        unsaved). Nothing renders in the fake, so 0x40000000 gives nil."""
        project = self.project if idx == -1 else None
        if 0 <= idx < len(self.projects):
            project = self.projects[idx]
        if project is None:
            return None, ""
        return project, project.file or ""

    @api("reaper.SelectProjectInstance")
    def _SelectProjectInstance(self, proj: Project) -> None:
        self.select_project(proj)

    @api("reaper.GetOS")
    def _GetOS(self) -> str:
        return self.os_name

    @api("reaper.GetAppVersion")
    def _GetAppVersion(self) -> str:
        return self.app_version

    # The fake's project has one tempo, in quarter notes per minute, and no tempo markers.

    @api("reaper.Master_GetTempo")
    def _Master_GetTempo(self) -> float:
        return self.project.bpm

    @api("reaper.TimeMap2_timeToQN")
    def _TimeMap2_timeToQN(self, proj: Project, tpos: float) -> float:
        """Converts a project time to quarter notes, at ``proj``'s one tempo."""
        return float(tpos) * proj.bpm / 60.0

    @api("reaper.TimeMap2_QNToTime")
    def _TimeMap2_QNToTime(self, proj: Project, qn: float) -> float:
        return float(qn) * 60.0 / proj.bpm

    @api("reaper.APIExists")
    def _APIExists(self, name: str) -> bool:
        return f"reaper.{name}" in self.api

    @api("reaper.ValidatePtr")
    def _ValidatePtr(self, pointer: Any, ctype: str) -> bool:
        return self._ValidatePtr2(self.project, pointer, ctype)

    @api("reaper.ValidatePtr2")
    def _ValidatePtr2(self, proj: Project, pointer: Any, ctype: str) -> bool:
        expected = {"ReaProject*": Project, "MediaTrack*": Track, "MediaItem*": Item,
                    "MediaItem_Take*": Take, "PCM_source*": Source,
                    "TrackEnvelope*": Envelope}.get(ctype)  # fmt: skip
        if expected is None or not isinstance(pointer, expected) or pointer.deleted:
            return False
        if isinstance(pointer, Track):
            return pointer.project is proj
        if isinstance(pointer, Item | Take | Envelope):
            take = pointer.take if isinstance(pointer, Envelope) else pointer
            item = take if isinstance(take, Item) else take.item
            return item.track.project is proj
        return True

    @api("reaper.time_precise")
    def _time_precise(self) -> float:
        """The monotonic clock, moved forward by ``clock_offset`` (tests skip waiting)."""
        return time.monotonic() + self.clock_offset

    @api("reaper.file_exists")
    def _file_exists(self, path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.R_OK)

    @api("reaper.RecursiveCreateDirectory")
    def _RecursiveCreateDirectory(self, path: str, ignored: int) -> int:
        """Positive on success (fake choice: also when it already exists), 0 on failure."""
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            return 0
        return 1

    @api("reaper.EnumerateFiles")
    def _EnumerateFiles(self, path: str, idx: int) -> str | None:
        try:
            names = sorted(e.name for e in os.scandir(path) if e.is_file())
        except OSError:
            return None
        return names[idx] if 0 <= idx < len(names) else None

    @api("reaper.EnumerateSubdirectories")
    def _EnumerateSubdirectories(self, path: str, idx: int) -> str | None:
        try:
            names = sorted(e.name for e in os.scandir(path) if e.is_dir())
        except OSError:
            return None
        return names[idx] if 0 <= idx < len(names) else None

    # ================================================================ reaper.* : dialogs

    @api("reaper.ShowConsoleMsg")
    def _ShowConsoleMsg(self, msg: str) -> None:
        self.console.append(msg)

    @api("reaper.ClearConsole")
    def _ClearConsole(self) -> None:
        self.console.append("")

    @api("reaper.ShowMessageBox")
    def _ShowMessageBox(self, msg: str, title: str, kind: int) -> int:
        """Answers from ``message_box_answers`` (FIFO), else OK/YES/RETRY per dialog type."""
        if self.message_box_answers:
            answer = self.message_box_answers.pop(0)
        else:
            answer = _MESSAGE_BOX_DEFAULTS.get(kind, 1)
        self.message_boxes.append(MessageBox(msg, title, kind, answer))
        return answer

    @api("reaper.MB")
    def _MB(self, msg: str, title: str, kind: int) -> int:
        return self._ShowMessageBox(msg, title, kind)

    @api("reaper.GetUserInputs")
    def _GetUserInputs(
        self, title: str, num_inputs: int, captions_csv: str, defaults_csv: str
    ) -> tuple[bool, str]:
        """The next answer from ``user_inputs``: None (Cancel), a csv string, a list of
        values, or a callable(title, captions, defaults) giving one of those. No scripted
        answer left is an error: a test must say what the user types."""
        fields = captions_csv.split(",")
        separator = next(
            (f[len("separator=") :] for f in fields if f.startswith("separator=")), ","
        )
        captions = [f for f in fields if not f.startswith(("separator=", "extrawidth="))]
        defaults = defaults_csv.split(separator) if defaults_csv else []
        self.user_input_calls.append((title, captions, defaults))
        if not self.user_inputs:
            raise ReaperError(
                f"dialog {title!r} has no scripted answer (append to fake.user_inputs)"
            )
        answer = self.user_inputs.pop(0)
        if callable(answer):
            answer = answer(title, captions, defaults)
        if answer is None:
            return False, ""
        values = answer.split(separator) if isinstance(answer, str) else [str(v) for v in answer]
        if len(values) != num_inputs:
            raise ReaperError(f"scripted answer {answer!r} has {len(values)} values, dialog "
                              f"{title!r} asks for {num_inputs}")  # fmt: skip
        return True, separator.join(values)

    @api("reaper.get_action_context")
    def _get_action_context(self, *args: Any) -> tuple[Any, ...]:
        """(is_new_value, script path, section 0, command id, mode, resolution, val -1, "")."""
        run = self._run()
        return True, run.path, 0, run.command_id, -1, -1, -1, ""

    # ================================================================ reaper.* : processes

    @api("reaper.ExecProcess")
    def _ExecProcess(self, cmdline: str, timeout_ms: int) -> bytes | None:
        """Run a command line for real.

        The command line is split like a POSIX shell would split words (shlex.split) and run
        without a shell, with ``exec_env``/``exec_cwd``. timeoutmsec -1/-2: start in the
        background and return "" at once (fake choice; the Popen is kept in ``background``,
        output logged under root/exec-logs). 0: wait as long as it takes. >0: wait that many
        ms, then kill it and return nil (fake choice). Otherwise "<exit code>\\n<output>",
        output being stdout (and stderr when exec_capture_stderr). nil on total failure
        (empty command line, bad quoting, executable not found).
        """
        try:
            argv: list[str] | None = shlex.split(cmdline)
        except ValueError:
            argv = None
        result = self._exec(argv, timeout_ms) if argv else None
        self.exec_calls.append(ExecCall(cmdline, timeout_ms, argv, result))
        return result

    def _exec(self, argv: list[str], timeout_ms: int) -> bytes | None:
        stderr = subprocess.STDOUT if self.exec_capture_stderr else subprocess.DEVNULL
        if timeout_ms < 0:
            logs = self.root / "exec-logs"
            logs.mkdir(exist_ok=True)
            log_path = logs / f"{len(self.background)}-{os.path.basename(argv[0])}.log"
            with open(log_path, "wb") as log:
                try:
                    popen = subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        env=self.exec_env, cwd=self.exec_cwd, start_new_session=True,
                    )  # fmt: skip
                except OSError:
                    return None
            self.background.append(BackgroundProcess(argv, popen, log_path))
            return b""
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                env=self.exec_env, cwd=self.exec_cwd,
            )  # fmt: skip
        except OSError:
            return None
        try:
            out, _ = proc.communicate(timeout=None if timeout_ms == 0 else timeout_ms / 1000)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None
        return b"%d\n" % proc.returncode + out

    # ================================================================ reaper.* : defer

    @api("reaper.defer")
    def _defer(self, *args: Any) -> None:
        """Queue a function for the next defer step (see run_defer)."""
        self._queue_fn("reaper.defer", args).queue.append(args[0])

    @api("reaper.runloop")
    def _runloop(self, *args: Any) -> None:
        self._queue_fn("reaper.runloop", args).queue.append(args[0])

    @api("reaper.atexit")
    def _atexit(self, *args: Any) -> None:
        self._queue_fn("reaper.atexit", args).atexit.append(args[0])

    def _queue_fn(self, name: str, args: tuple[Any, ...]) -> ScriptRun:
        if len(args) != 1 or not self._is_lua_function(args[0]):
            got = ", ".join(lua_type_name(a) for a in args)
            raise ReaperError(f"expected 1 argument (a function), got ({got})")
        run = self._run()
        if not run.running:
            raise ReaperError("script has ended")
        return run

    # ================================================================ gfx.*

    def _gfx(self) -> tuple[GfxWindow, Any]:
        run = self._run()
        return run.gfx, run.gfx_table

    @staticmethod
    def _num(value: Any, default: float = 0.0) -> float:
        if isinstance(value, bool) or value is None:
            return default
        if isinstance(value, int | float):
            return value
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ReaperError(f"expected a number, got {lua_type_name(value)}") from exc

    def _color(self, table: Any) -> tuple[float, float, float, float]:
        return (table[b"r"], table[b"g"], table[b"b"], table[b"a"])

    def _record(self, op: str, args: tuple[Any, ...], text: DrawnText | None = None) -> DrawOp:
        window, table = self._gfx()
        draw = DrawOp(op, args, self._color(table), text)
        window.current.ops.append(draw)
        return draw

    @api("gfx.init")
    def _gfx_init(self, name: str = "", w: Any = 0, h: Any = 0, *rest: Any) -> int:
        """Open (or, with an empty name when open, resize) the window; fake choice: returns 1."""
        window, table = self._gfx()
        if name or not window.open:
            window.title = name or window.title
        window.initialised = window.open = True
        if self._num(w) > 0:
            table[b"w"] = int(self._num(w))
        if self._num(h) > 0:
            table[b"h"] = int(self._num(h))
        if not table[b"w"]:
            table[b"w"], table[b"h"] = 400, 300
        return 1

    @api("gfx.quit")
    def _gfx_quit(self, *args: Any) -> None:
        self._gfx()[0].open = False

    @api("gfx.update")
    def _gfx_update(self, *args: Any) -> None:
        window, _ = self._gfx()
        window.frames.append(window.current)
        window.current = Frame(len(window.frames))

    @api("gfx.getchar")
    def _gfx_getchar(self, char: Any = None, *rest: Any) -> int:
        """-1 once the window is closed; else a queued key (press_key) or 0."""
        window, _ = self._gfx()
        if not window.open:
            return -1
        if char in (None, 0) and window.keys:
            return window.keys.popleft()
        return 0

    @api("gfx.set")
    def _gfx_set(self, r: Any = 1.0, g: Any = None, b: Any = None, a: Any = 1.0,
                 mode: Any = 0, *rest: Any) -> None:  # fmt: skip
        _, table = self._gfx()
        r = self._num(r)
        table[b"r"] = r
        table[b"g"] = r if g is None else self._num(g)
        table[b"b"] = r if b is None else self._num(b)
        table[b"a"] = self._num(a, 1.0)
        table[b"mode"] = self._num(mode)

    @api("gfx.rect")
    def _gfx_rect(self, x: Any, y: Any, w: Any, h: Any, *rest: Any) -> None:
        self._record("rect", (x, y, w, h, *rest))

    @api("gfx.line")
    def _gfx_line(self, x: Any, y: Any, x2: Any, y2: Any, *rest: Any) -> None:
        self._record("line", (x, y, x2, y2, *rest))

    @api("gfx.roundrect")
    def _gfx_roundrect(self, x: Any, y: Any, w: Any, h: Any, *rest: Any) -> None:
        self._record("roundrect", (x, y, w, h, *rest))

    @api("gfx.circle")
    def _gfx_circle(self, x: Any, y: Any, r: Any, *rest: Any) -> None:
        self._record("circle", (x, y, r, *rest))

    def _measure(self, text: str) -> tuple[int, int]:
        """Fake font metrics: each character is texth/2 wide, one line is texth high."""
        _, table = self._gfx()
        texth = int(table[b"texth"])
        lines = text.split("\n")
        return max(len(line) for line in lines) * max(1, texth // 2), texth * len(lines)

    @api("gfx.measurestr")
    def _gfx_measurestr(self, text: Any = "", *rest: Any) -> tuple[int, int]:
        return self._measure(self._text(text))

    @staticmethod
    def _text(value: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return lua_number_to_str(value)
        if not isinstance(value, str):
            raise ReaperError(f"expected a string, got {lua_type_name(value)}")
        return value

    @api("gfx.drawstr")
    def _gfx_drawstr(self, text: Any = "", flags: Any = 0, right: Any = None,
                     bottom: Any = None, *rest: Any) -> None:  # fmt: skip
        """Record the text with its box at gfx.x/gfx.y (aligned by flags when right/bottom are
        given: 1 centre, 2 right, 4 vertical centre, 8 bottom) and advance gfx.x."""
        text = self._text(text)
        window, table = self._gfx()
        w, h = self._measure(text)
        x, y, flags = self._num(table[b"x"]), self._num(table[b"y"]), int(self._num(flags))
        if right is not None:
            x += (self._num(right) - x - w) / 2 if flags & 1 else 0
            x = self._num(right) - w if flags & 2 else x
        if bottom is not None:
            y += (self._num(bottom) - y - h) / 2 if flags & 4 else 0
            y = self._num(bottom) - h if flags & 8 else y
        drawn = DrawnText(text, x, y, w, h, window.current.index, self._color(table))
        self._record("drawstr", (text, flags, right, bottom), drawn)
        table[b"x"] = x + w

    @api("gfx.drawnumber")
    def _gfx_drawnumber(self, n: Any, ndigits: Any = 0, *rest: Any) -> None:
        self._gfx_drawstr(f"{self._num(n):.{int(self._num(ndigits))}f}")

    @api("gfx.setfont")
    def _gfx_setfont(self, idx: Any = 0, face: Any = None, size: Any = None, *rest: Any) -> None:
        """Font 0 (or a font without size) is 16 px high in the fake; others use ``size``."""
        _, table = self._gfx()
        table[b"texth"] = int(self._num(size)) if size is not None and self._num(idx) else 16

    @api("gfx.showmenu")
    def _gfx_showmenu(self, menu: Any = "", *rest: Any) -> int:
        """Answers from ``menu_answers`` (FIFO; 1-based item, 0 = dismissed), else 0."""
        menu = self._text(menu)
        answer = self.menu_answers.pop(0) if self.menu_answers else 0
        if callable(answer):
            answer = answer(menu)
        self.menus.append((menu, answer))
        return answer
