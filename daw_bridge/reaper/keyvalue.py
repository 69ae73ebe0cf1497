"""``key=value`` line files: the only format the Lua shims read and write.

Lua has no JSON; one ``([^=]+)=(.*)`` pattern parses these. Values never hold
newlines. Files are replaced atomically, so a poller never sees half a file.
"""

from __future__ import annotations

import time
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


#: Windows refuses to replace a file another process has open (the shim reading it)
#: with a PermissionError; the reader closes it within milliseconds, so try again.
_WRITE_TRIES = 5
_RETRY_SLEEP = 0.05


def write(path: Path, values: Mapping[str, object]) -> None:
    text = render(values)
    for attempt in range(_WRITE_TRIES):
        try:
            with atomic_output(Path(path), overwrite=True) as temporary:
                temporary.write_text(text, encoding="utf-8")
            return
        except PermissionError:
            if attempt == _WRITE_TRIES - 1:
                raise
            time.sleep(_RETRY_SLEEP * (attempt + 1))
