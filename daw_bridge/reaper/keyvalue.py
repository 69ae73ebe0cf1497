"""``key=value`` line files: the only format the Lua shims read and write.

Lua has no JSON; one ``([^=]+)=(.*)`` pattern parses these. Values never hold
newlines. Files are replaced atomically, so a poller never sees half a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from daw_bridge.files import atomic_output


def parse(text: str) -> dict[str, str]:
    """Later keys win; blank lines and lines without ``=`` are ignored."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, equals, value = line.partition("=")
        if equals and key.strip():
            values[key.strip()] = value
    return values


def read(path: Path) -> dict[str, str]:
    return parse(Path(path).read_text(encoding="utf-8"))


def one_line(text: object) -> str:
    return str(text).replace("\r", " ").replace("\n", " ")


def render(values: Mapping[str, object]) -> str:
    return "".join(f"{key}={one_line(value)}\n" for key, value in values.items())


def write(path: Path, values: Mapping[str, object]) -> None:
    with atomic_output(Path(path), overwrite=True) as temporary:
        temporary.write_text(render(values), encoding="utf-8")
