"""All-or-nothing delivery of a job's files into the user's output folder.

A server job's stems, manifest, MIDI and processed stems are first written into
a hidden staging folder inside the output folder (``.daw-bridge-<job>.partial``),
then moved to their final names, one rename each, the manifest last. So a DAW
script that waits for ``manifest.json`` never sees half a set.

Before the first rename, a journal in the staging folder records each file's
identity (inode, size, modification time). A delivery cut short (kill -9, a
full disk) is undone by :func:`undo`: the files it already moved are removed,
the files it replaced are put back, and the staging folder goes. A file is
removed only if the journal names it and it is still that very file, so nothing
of the user's is touched. Nothing here is fsynced: a power cut mid-delivery is
not covered.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from daw_bridge.errors import OutputFolderError
from daw_bridge.files import ensure_writable, is_out_of_space, publish

_PREFIX, _SUFFIX = ".daw-bridge-", ".partial"
_JOURNAL = ".journal.json"
_REPLACED = ".replaced"  # files an overwrite moved aside, until the delivery is complete
#: Hidden temporary files as :func:`daw_bridge.files.temporary_sibling` names them.
_LOOSE_PARTIAL = re.compile(r"\..+\.partial-[0-9a-f]{8}(\.[^.]+)?")
#: Such a file untouched for this long belongs to no running writer.
LOOSE_PARTIAL_SECONDS = 3600.0


def staging_folder(folder: Path, tag: str) -> Path:
    """The hidden folder a delivery tagged ``tag`` (a job id) stages its files in."""
    return Path(folder) / f"{_PREFIX}{tag}{_SUFFIX}"


class Delivery:
    """Stage files with :meth:`path`, then :meth:`publish` them; leaving early undoes all.

    Use as a context manager: an exception (or leaving without publishing)
    undoes everything, and a full drive or another write error becomes an
    :class:`OutputFolderError` naming the folder.
    """

    def __init__(self, folder: Path, tag: str) -> None:
        self.folder = Path(folder)
        self.staging = staging_folder(self.folder, tag)
        self._created: list[Path] = []
        self._published = False

    def __enter__(self) -> Delivery:
        missing = _missing_folders(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._created = missing
            undo(self.staging)  # a leftover of the same tag is never worth keeping
            self.staging.mkdir()
            self._write_journal([])  # the folders made for it go again if it is cut short
        except OSError as error:
            undo(self.staging)
            _remove_empty(missing)
            raise _write_error(self.folder, error) from error
        return self

    def path(self, relative: str | Path) -> Path:
        """Where to write what becomes ``folder/relative`` once published."""
        path = self.staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def final(self, staged: Path) -> Path:
        """The final name of a file staged at ``staged``."""
        return self.folder / Path(staged).relative_to(self.staging)

    def publish(
        self, overwrite: bool = False, replace_in: Iterable[str] = (), last: str = "manifest.json"
    ) -> None:
        """Move every staged file to its final name, ``last`` last.

        Existing files are replaced only with ``overwrite``, or inside the
        subfolders named in ``replace_in`` (a preset's folder is replaced as a
        set each time the preset is applied).
        """
        subfolders = set(replace_in)
        files = sorted(self._staged(), key=lambda rel: (rel == Path(last), str(rel)))

        def replaces(rel: Path) -> bool:
            return overwrite or (len(rel.parts) > 1 and rel.parts[0] in subfolders)

        for rel in files:  # refused before anything moves
            if not replaces(rel):
                ensure_writable(self.folder / rel, overwrite=False)
        made = _missing_folders(*(self.folder / rel.parent for rel in files))
        self._created += made
        entries = [{"path": rel.as_posix(), "id": _identity(self.staging / rel)} for rel in files]
        self._write_journal(entries)
        for rel in files:
            staged, final = self.staging / rel, self.folder / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            if replaces(rel):
                if os.path.lexists(final):
                    kept = self.staging / _REPLACED / rel
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(final, kept)
                os.replace(staged, final)
            else:
                publish(staged, final, overwrite=False)  # never over a file made meanwhile
        self._published = True
        shutil.rmtree(self.staging, ignore_errors=True)

    def __exit__(self, kind: type | None, error: BaseException | None, _trace: object) -> None:
        if error is None and self._published:
            return
        full = error is not None and is_out_of_space(error, self.folder)  # before space is freed
        undo(self.staging)
        _remove_empty(self._created)
        if full or (isinstance(error, OSError) and _inside(error.filename, self.folder)):
            raise _write_error(self.folder, error, full) from error

    def _staged(self) -> list[Path]:
        found = []
        for root, folders, names in os.walk(self.staging):
            if Path(root) == self.staging:
                folders[:] = [name for name in folders if name != _REPLACED]
                names = [name for name in names if not name.startswith(_JOURNAL)]
            found += [(Path(root) / name).relative_to(self.staging) for name in names]
        return found

    def _write_journal(self, files: list[dict]) -> None:
        # Not fsynced: a killed process leaves it to the kernel all the same. A power cut
        # is not covered (nor are the stems' own bytes, which would cost a flush each).
        document = {"created": [str(path) for path in self._created], "files": files}
        temporary = self.staging / f"{_JOURNAL}.{uuid.uuid4().hex[:6]}"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        os.replace(temporary, self.staging / _JOURNAL)


def undo(staging: Path) -> None:
    """Undo the delivery staged in ``staging`` unless it was complete; remove ``staging``.

    Complete means every file the journal lists is in place: then the set
    stays. Otherwise each listed file still in place is removed, each file it
    replaced is put back, and the folders the delivery made go if empty.
    """
    staging = Path(staging)
    if not staging.is_dir():
        return
    folder = staging.parent
    journal = _read_journal(staging)
    files = journal["files"]
    placed = [_identity(folder / entry["path"]) == entry["id"] for entry in files]
    if not (files and all(placed)):
        for entry, ours in zip(reversed(files), reversed(placed), strict=True):
            final = folder / entry["path"]
            with contextlib.suppress(OSError):
                if ours:
                    final.unlink()
                kept = staging / _REPLACED / entry["path"]
                if kept.exists() and not os.path.lexists(final):
                    os.replace(kept, final)
    shutil.rmtree(staging, ignore_errors=True)
    _remove_empty([Path(path) for path in journal["created"]])


def sweep(folder: Path, finished: Callable[[str], bool]) -> None:
    """Clear what cut-short writers left in ``folder``.

    Undoes the staging folders whose tag ``finished`` says belongs to no running
    job, and removes hidden partial files (our temporary names) untouched for
    :data:`LOOSE_PARTIAL_SECONDS`.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        name = entry.name
        with contextlib.suppress(OSError):
            if name.startswith(_PREFIX) and name.endswith(_SUFFIX) and entry.is_dir():
                if finished(name[len(_PREFIX) : -len(_SUFFIX)]):
                    undo(Path(entry.path))
            elif (
                _LOOSE_PARTIAL.fullmatch(name)
                and entry.is_file(follow_symlinks=False)
                and now - entry.stat().st_mtime > LOOSE_PARTIAL_SECONDS
            ):
                os.unlink(entry.path)


def _identity(path: Path) -> list[int] | None:
    """What tells our file from another one of the same name (JSON-friendly)."""
    try:
        stat = os.lstat(path)
    except OSError:
        return None
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


def _read_journal(staging: Path) -> dict:
    try:
        document = json.loads((staging / _JOURNAL).read_text(encoding="utf-8"))
        files = [
            {"path": str(entry["path"]), "id": entry["id"]}
            for entry in document["files"]
            if ".." not in Path(entry["path"]).parts  # only ever inside the folder
        ]
        return {"created": [str(path) for path in document["created"]], "files": files}
    except (OSError, ValueError, KeyError, TypeError):  # cut short before the journal was written
        return {"created": [], "files": []}


def _missing_folders(*folders: Path) -> list[Path]:
    """The folders (and their parents) that do not exist yet, deepest first."""
    missing: list[Path] = []
    for folder in folders:
        path = Path(folder).absolute()
        while not path.exists() and path.parent != path:
            if path not in missing:
                missing.append(path)
            path = path.parent
    return sorted(missing, key=lambda path: len(path.parts), reverse=True)


def _remove_empty(folders: Iterable[Path]) -> None:
    for path in sorted(folders, key=lambda path: len(Path(path).parts), reverse=True):
        with contextlib.suppress(OSError):
            Path(path).rmdir()


def _inside(filename: object, folder: Path) -> bool:
    """Whether an error's file name is in ``folder`` (reading a stem to copy it is not)."""
    if not isinstance(filename, (str, os.PathLike)):
        return False
    path = Path(os.fsdecode(filename)).absolute()
    return path == folder.absolute() or folder.absolute() in path.parents


def _write_error(folder: Path, error: BaseException, full: bool = False) -> OutputFolderError:
    if full:
        return OutputFolderError(
            f"The drive holding the output folder {folder} is full: nothing was delivered.",
            "Free some space on that drive, or choose an output folder on another drive, "
            "then run the job again.",
        )
    reason = getattr(error, "strerror", None) or str(error)
    return OutputFolderError(
        f"Could not write into the output folder {folder} ({reason}): nothing was delivered.",
        "Check that the folder's drive is connected and writable, or choose another "
        "output folder, then run the job again.",
    )
