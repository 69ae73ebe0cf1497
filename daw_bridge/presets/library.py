"""Finding presets: by file path, or by name in the user's folder, then the built-ins.

The user's folder comes first, so copying a built-in there under the same name
and editing it changes what that name means on this machine. Built-ins live
in the repository's ``presets/`` folder, installed as the package data
``daw_bridge.presets.builtin``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from daw_bridge.presets.schema import Preset, PresetError, read_preset_file

SUFFIX = ".toml"


def builtin_dir() -> Path:
    """The built-in presets: installed beside this module, else the checkout's ``presets/``."""
    installed = Path(__file__).resolve().parent / "builtin"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "presets"


def user_dir() -> Path:
    """``$DAW_BRIDGE_PRESET_DIR``, else ``presets`` in the user's daw-bridge config folder."""
    configured = os.environ.get("DAW_BRIDGE_PRESET_DIR")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("daw-bridge")) / "presets"


@dataclass(frozen=True)
class PresetEntry:
    name: str
    path: Path
    origin: str  # "user" or "built-in"


def available() -> list[PresetEntry]:
    """Every preset by name (a user preset hides a built-in of the same name), sorted."""
    found: dict[str, PresetEntry] = {}
    for origin, folder in (("built-in", builtin_dir()), ("user", user_dir())):
        if folder.is_dir():
            for path in folder.glob(f"*{SUFFIX}"):
                found[path.stem] = PresetEntry(path.stem, path, origin)
    return sorted(found.values(), key=lambda entry: entry.name)


def _looks_like_path(reference: str) -> bool:
    return reference.endswith(SUFFIX) or "/" in reference or os.sep in reference


def find(reference: str) -> Path:
    """The file of a preset given by name or by path."""
    if _looks_like_path(reference):
        path = Path(reference).expanduser()
        if not path.is_file():
            raise PresetError(
                f"Preset file not found: {path}",
                "Check the path, or give a preset name (see `daw-bridge presets list`).",
            )
        return path.resolve()
    for entry in available():
        if entry.name == reference:
            return entry.path
    names = ", ".join(entry.name for entry in available())
    raise PresetError(
        f"There is no preset named {reference!r}.",
        f"Use one of: {names}; or give a .toml file's path, or put "
        f"{reference}{SUFFIX} in {user_dir()}.",
    )


def load(reference: str) -> Preset:
    """Find, read and check a preset by name or path (plugins are not loaded yet)."""
    path = find(reference)
    preset = read_preset_file(path)
    if not _looks_like_path(reference) and preset.name != path.stem:
        raise PresetError(
            f"{path}: name = {preset.name!r} does not match the file name {path.name!r}.",
            f'Set name = "{path.stem}", or rename the file to {preset.name}{SUFFIX}.',
        )
    return preset
