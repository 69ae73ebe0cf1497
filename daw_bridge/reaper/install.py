"""``daw-bridge install-reaper``: scripts in place, actions registered, config written.

Everything is idempotent: running it again updates the scripts and the config and
leaves exactly one registration per action. ``reaper-kb.ini`` belongs to the
user, so it is rewritten atomically, other lines untouched, with a one-time
backup.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from daw_bridge import __version__
from daw_bridge.errors import DawBridgeError
from daw_bridge.files import atomic_output
from daw_bridge.reaper import keyvalue
from daw_bridge.reaper.actions import ACTIONS, CONFIG, LIBRARY, SCRIPTS_SUBFOLDER, scripts_folder


@dataclass(frozen=True)
class Installed:
    scripts: Path
    config: Path
    keymap: Path
    registered: int


def default_resource_path() -> Path:
    """Where REAPER keeps its settings by default on this system."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "REAPER"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "REAPER"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "REAPER"


def client_command() -> list[str]:
    """The absolute command a shim runs; stable across shells and PATH changes."""
    return [sys.executable, "-m", "daw_bridge"]


def _preset_folders() -> list[Path]:
    """Where the shims list presets from: the user's folder, then the built-ins."""
    from daw_bridge.presets import library

    return [library.user_dir(), library.builtin_dir()]


def install(resource_path: Path | None = None) -> Installed:
    explicit = resource_path is not None
    resource = Path(resource_path) if explicit else default_resource_path()
    if not explicit and not resource.is_dir():
        raise DawBridgeError(
            f"No REAPER resource folder at {resource}.",
            "In REAPER choose Options > Show REAPER resource path, then run "
            "`daw-bridge install-reaper --resource-path <that folder>`.",
        )
    for argument in client_command():
        if '"' in argument:
            raise DawBridgeError(
                f"The Python path {argument} contains a double quote, which REAPER cannot run.",
                "Install daw-bridge in a Python whose path has no double quotes.",
            )
    try:
        return _install_into(resource)
    except OSError as error:
        raise DawBridgeError(
            f"Could not install into {resource}: {error.strerror or error} "
            f"({error.filename or resource}).",
            "Pass REAPER's resource folder (Options > Show REAPER resource path) with "
            "--resource-path, and check that you may write to it.",
        ) from error


def _install_into(resource: Path) -> Installed:
    target = resource / "Scripts" / SCRIPTS_SUBFOLDER
    target.mkdir(parents=True, exist_ok=True)
    source = scripts_folder()
    for name in [LIBRARY, *(action.file for action in ACTIONS)]:
        _copy_atomically(source / name, target / name)
    config = resource / "Data" / "daw-bridge" / CONFIG  # found by scripts wherever they live
    config.parent.mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {"version": __version__}
    settings.update({f"arg.{i}": arg for i, arg in enumerate(client_command(), start=1)})
    settings["presets"] = ";".join(str(folder) for folder in _preset_folders())
    keyvalue.write(config, settings)
    keymap = resource / "reaper-kb.ini"
    _register(keymap)
    return Installed(target, config, keymap, len(ACTIONS))


def _copy_atomically(source: Path, target: Path) -> None:
    with atomic_output(target, overwrite=True) as temporary:
        shutil.copyfile(source, temporary)


def registration(action_file: str, description: str, command_id: str) -> str:
    """One ``reaper-kb.ini`` line: section 0 (Main), path relative to Scripts."""
    path = f"{SCRIPTS_SUBFOLDER}/{action_file}"
    return f'SCR 4 0 {command_id} "Custom: daw-bridge: {description}" "{path}"'


def _register(keymap: Path) -> None:
    old = keymap.read_text(encoding="utf-8", errors="surrogateescape") if keymap.exists() else ""
    ours = {action.command_id for action in ACTIONS}
    kept = [line for line in old.splitlines() if not _is_ours(line, ours)]
    lines = kept + [registration(a.file, a.description, a.command_id) for a in ACTIONS]
    text = "\n".join(lines) + "\n"
    if text == old:
        return
    backup = keymap.with_name(keymap.name + ".before-daw-bridge")
    if keymap.exists() and not backup.exists():
        shutil.copyfile(keymap, backup)
    with atomic_output(keymap, overwrite=True) as temporary:
        temporary.write_text(text, encoding="utf-8", errors="surrogateescape")


def _is_ours(line: str, command_ids: set[str]) -> bool:
    parts = line.split()
    return len(parts) > 3 and parts[0] == "SCR" and parts[3] in command_ids
