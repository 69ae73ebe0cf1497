"""Reading the TOML files users write (presets, ensembles), with errors that say what to
fix: one place for the file and syntax problems, so every kind of file reports them alike."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

from daw_bridge.errors import DawBridgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_toml(path: Path, kind: str, error: type[DawBridgeError], syntax: str) -> dict[str, Any]:
    """The table in ``path``, a ``kind`` file (e.g. "preset"); ``error`` is raised with the
    problem and its fix, ``syntax`` being the kind's reminder of what TOML looks like."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as missing:
        raise error(
            f"{kind.capitalize()} file not found: {path}",
            f"Check the path, or use a {kind} name.",
        ) from missing
    except (OSError, UnicodeDecodeError) as unreadable:
        raise error(
            f"Cannot read the {kind} file {path} ({unreadable}).", "Save it as UTF-8 text (TOML)."
        ) from unreadable
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as invalid:
        raise error(
            f"{path} is not valid TOML: {invalid}.", f"Fix the syntax at that line ({syntax})."
        ) from invalid


class Problems:
    """Every problem of a file, each as ``key: what is wrong`` plus its fix, raised at once
    as ``error``; ``recheck`` says how to check the file again after correcting it."""

    def __init__(self, label: str, error: type[DawBridgeError], recheck: str) -> None:
        self.label, self.error, self.recheck = label, error, recheck
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, problem: str, fix: str) -> None:
        self.items.append((f"{key}: {problem}" if key else problem, fix))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            problem, fix = self.items[0]
            raise self.error(f"{self.label}: {problem}", fix)
        problems = "\n".join(f"  - {problem} {fix}" for problem, fix in self.items)
        raise self.error(
            f"{self.label} has {len(self.items)} problems:\n{problems}",
            f"Correct each key listed, then check again with {self.recheck}.",
        )


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` Did you mean 'x'?`` for a likely typo, else nothing."""
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean {match[0]!r}?" if match else ""
