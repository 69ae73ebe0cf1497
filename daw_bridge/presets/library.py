"""Finding presets: by file path, or by name in the user's folder, then the built-ins.

The user's folder comes first, so copying a built-in there under the same name
and editing it changes what that name means on this machine. Built-ins live
in the repository's ``presets/`` folder, installed as the package data
``daw_bridge.presets.builtin``.
"""

from __future__ import annotations

import os
from pathlib import Path

from daw_bridge.presets.schema import Preset, PresetError, read_preset_file
from daw_bridge.toml_files import SUFFIX, Library, LibraryEntry


def builtin_dir() -> Path:
    """The built-in presets: installed beside this module, else the checkout's ``presets/``."""
    installed = Path(__file__).resolve().parent / "builtin"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "presets"


_PRESETS = Library(
    "preset", PresetError, builtin_dir, "DAW_BRIDGE_PRESET_DIR", "presets",
    "`daw-bridge presets list`",
)  # fmt: skip


def user_dir() -> Path:
    """``$DAW_BRIDGE_PRESET_DIR``, else ``presets`` in the user's daw-bridge config folder."""
    return _PRESETS.user_dir()


def available() -> list[LibraryEntry]:
    """Every preset by name (a user preset hides a built-in of the same name), sorted."""
    return _PRESETS.available()


def _looks_like_path(reference: str) -> bool:
    return reference.endswith(SUFFIX) or "/" in reference or os.sep in reference


def find(reference: str) -> Path:
    """The file of a preset given by name or by path."""
    return _PRESETS.find(reference, by_path=_looks_like_path(reference))


def load(reference: str) -> Preset:
    """Find, read and check a preset by name or path (plugins are not loaded yet)."""
    path = find(reference)
    preset = read_preset_file(path)
    if not _looks_like_path(reference):
        _PRESETS.check_name(path, preset.name)
    return preset
