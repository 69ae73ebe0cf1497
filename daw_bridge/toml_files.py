"""Reading the TOML files users write (presets, ensembles), with errors that say what to
fix: one place for the file and syntax problems, so every kind of file reports them alike,
and one for finding such files by name (:class:`Library`)."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


SUFFIX = ".toml"


@dataclass(frozen=True)
class LibraryEntry:
    name: str  # the file's name without ``.toml``
    path: Path
    origin: str  # "user" or "built-in"


@dataclass(frozen=True)
class Library:
    """The named files of one kind (presets, ensembles): the user's folder, then the
    built-ins; a user file hides a built-in of the same name, so copying one there and
    editing it changes what that name means on this machine."""

    kind: str  # "preset", "ensemble": in messages
    error: type[DawBridgeError]
    builtin_dir: Callable[[], Path]
    user_env: str  # the variable naming the user's folder
    user_folder: str  # else this folder in the user's daw-bridge config folder
    listing: str  # the command that lists the names

    def user_dir(self) -> Path:
        configured = os.environ.get(self.user_env)
        if configured:
            return Path(configured).expanduser()
        from platformdirs import user_config_dir

        return Path(user_config_dir("daw-bridge")) / self.user_folder

    def available(self) -> list[LibraryEntry]:
        """Every file by name, sorted."""
        found: dict[str, LibraryEntry] = {}
        for origin, folder in (("built-in", self.builtin_dir()), ("user", self.user_dir())):
            if folder.is_dir():
                for path in folder.glob(f"*{SUFFIX}"):
                    found[path.stem] = LibraryEntry(path.stem, path, origin)
        return sorted(found.values(), key=lambda entry: entry.name)

    def find(self, reference: str, by_path: bool) -> Path:
        """The file ``reference`` names: a path if ``by_path``, else a name."""
        article = "an" if self.kind[0] in "aeiou" else "a"
        if by_path:
            path = Path(reference).expanduser()
            if not path.is_file():
                raise self.error(
                    f"{self.kind.capitalize()} file not found: {path}",
                    f"Check the path, or give {article} {self.kind} name (see {self.listing}).",
                )
            return path.resolve()
        entries = self.available()
        for entry in entries:
            if entry.name == reference:
                return entry.path
        names = ", ".join(entry.name for entry in entries) or "none"
        raise self.error(
            f"There is no {self.kind} named {reference!r}.",
            f"Use one of: {names}; or give a .toml file's path, or put "
            f"{reference}{SUFFIX} in {self.user_dir()}.",
        )

    def check_name(self, path: Path, name: str) -> None:
        """A file found by name must say that name, or the two would mean different things."""
        if name != path.stem:
            raise self.error(
                f"{path}: name = {name!r} does not match the file name {path.name!r}.",
                f'Set name = "{path.stem}", or rename the file to {name}{SUFFIX}.',
            )


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
