"""The REAPER actions we ship: one source of truth for install and ReaPack."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

#: Shared by every action; not an action itself.
LIBRARY = "daw_bridge_lib.lua"
CONFIG = "daw-bridge.conf"
#: Folder under REAPER's Scripts folder.
SCRIPTS_SUBFOLDER = "daw-bridge"


@dataclass(frozen=True)
class Action:
    file: str
    description: str

    @property
    def command_id(self) -> str:
        """Stable, so reinstalling keeps the user's shortcuts and toolbar buttons."""
        digest = hashlib.sha1(f"daw-bridge/{self.file}".encode()).hexdigest()
        return f"RS{digest}"


ACTIONS = (
    Action(
        "daw-bridge - Split selected items into stems.lua",
        "Split selected items into stems (drums, bass, other, vocals)",
    ),
    Action(
        "daw-bridge - Split selected items into vocals and instrumental.lua",
        "Split selected items into vocals and instrumental",
    ),
    Action(
        "daw-bridge - Split selected items into 6 stems.lua",
        "Split selected items into 6 stems (adds guitar and piano)",
    ),
    Action(
        "daw-bridge - Split selected items with preset.lua", "Split selected items with preset..."
    ),
    Action("daw-bridge - Apply preset to stems.lua", "Apply preset to selected stems..."),
    Action("daw-bridge - Settings.lua", "Settings"),
    Action(
        "daw-bridge - Split drums into kit pieces.lua",
        "Split drums into kit pieces (kick, snare, toms, cymbals)",
    ),
)


def scripts_folder() -> Path:
    """The Lua files: the source checkout's ``reaper_scripts/``, else the installed copy."""
    checkout = Path(__file__).resolve().parents[2] / "reaper_scripts"
    if (checkout / LIBRARY).is_file():
        return checkout
    from importlib.resources import files

    return Path(str(files("daw_bridge.reaper.scripts")))
