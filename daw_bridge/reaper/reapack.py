"""The ReaPack index (``reaper_scripts/index.xml``), generated from :mod:`actions`.

ReaPack installs one package holding every action plus the shared library, so
the library file has a single owner. Regenerate after changing the actions:
``python -m daw_bridge.reaper.reapack > reaper_scripts/index.xml`` (a test checks
the committed file is current).
"""

from __future__ import annotations

import sys
from urllib.parse import quote
from xml.etree import ElementTree

from daw_bridge.reaper.actions import ACTIONS, LIBRARY

REPOSITORY = "https://github.com/daw-bridge/daw-bridge"
RAW_BASE = "https://raw.githubusercontent.com/daw-bridge/daw-bridge"
PACKAGE = "daw-bridge.lua"


def _version() -> str:
    from daw_bridge import __version__

    return __version__


def render_index(version: str | None = None) -> str:
    version = version or _version()
    index = ElementTree.Element("index", version="1", name="daw-bridge")
    category = ElementTree.SubElement(index, "category", name="Items Editing")
    package = ElementTree.SubElement(
        category,
        "reapack",
        name=PACKAGE,
        type="script",
        desc="daw-bridge: AI stem separation for selected items",
    )
    metadata = ElementTree.SubElement(package, "metadata")
    ElementTree.SubElement(metadata, "link", rel="website").text = REPOSITORY
    ElementTree.SubElement(metadata, "description").text = (
        "Split selected items into time-aligned stem tracks with the daw-bridge server. "
        "Needs the Python package: pip install daw-bridge, then daw-bridge install-reaper."
    )
    release = ElementTree.SubElement(
        package, "version", name=version, author="daw-bridge contributors"
    )
    for file in [*(action.file for action in ACTIONS), LIBRARY]:
        url = f"{RAW_BASE}/v{version}/reaper_scripts/{quote(file)}"
        attributes = {"file": file}
        if file != LIBRARY:
            attributes["main"] = "main"
        ElementTree.SubElement(release, "source", attributes).text = url
    ElementTree.indent(index)
    body = ElementTree.tostring(index, encoding="unicode")
    return f'<?xml version="1.0" encoding="utf-8"?>\n{body}\n'


if __name__ == "__main__":
    sys.stdout.write(render_index())
