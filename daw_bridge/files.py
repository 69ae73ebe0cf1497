"""Safe writing of files the user will own.

A stem or manifest appears under its final name complete or not at all: we write
to a hidden temporary name in the same folder and rename it into place. Unless
the caller asks, an existing file is never replaced. An output folder that cannot
take files is refused before any work (:func:`check_output_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from daw_bridge.errors import OutputExistsError, OutputFolderError


def temporary_sibling(final: Path) -> Path:
    """A hidden name next to ``final`` that keeps its extension (writers pick the format by it)."""
    return final.with_name(f".{final.stem}.partial-{uuid.uuid4().hex[:8]}{final.suffix}")


_CHOOSE_ANOTHER = "Choose an output folder you can write to (e.g. in your home or project folder)"


def check_output_folder(folder: Path | str) -> None:
    """Fail before any work, with the path and a fix, if ``folder`` cannot take files.

    A real probe, not a look at permission bits (they do not stop root, and a
    read-only mount or ``/proc`` does not show in them): the missing folders are
    created, as the writer would, and a hidden file is written into ``folder``
    and removed. The folders the probe created are removed again whatever the
    outcome, so the check leaves no trace: a command refused later for another
    reason leaves no empty folders behind, and the writer creates them for real.
    """
    if "\0" in str(folder):  # no system takes it (os calls would raise ValueError)
        raise OutputFolderError(
            f"The output folder {str(folder)!r} contains a NUL character.", f"{_CHOOSE_ANOTHER}."
        )
    folder = Path(folder).absolute()
    missing: list[Path] = []
    existing = folder
    while not _exists(existing, folder):
        if existing.parent == existing:  # a drive or share that is not there
            raise OutputFolderError(
                f"Cannot create the output folder {folder}: {existing} does not exist.",
                f"{_CHOOSE_ANOTHER}.",
            )
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        problem = (
            f"The output folder {folder} is a file, not a folder."
            if existing == folder
            else f"Cannot create the output folder {folder}: {existing} is a file."
        )
        raise OutputFolderError(problem, f"{_CHOOSE_ANOTHER}, or move that file out of the way.")
    created: list[Path] = []
    try:
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue  # made meanwhile by someone else: not ours to remove
            except OSError as error:
                raise OutputFolderError(
                    f"Cannot create the output folder {folder}: the system refused to make "
                    f"{path} ({error.strerror}).",
                    f"{_CHOOSE_ANOTHER}.",
                ) from None
            created.append(path)
        _write_probe(folder)
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()


def _exists(path: Path, folder: Path) -> bool:
    """Whether ``path`` exists; an error other than "not there" refuses ``folder``."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        raise OutputFolderError(
            f"Cannot reach the output folder {folder}: {path} is not accessible "
            f"({error.strerror}).",
            f"{_CHOOSE_ANOTHER}, or fix the permissions of {path}.",
        ) from None
    return True


def _write_probe(folder: Path) -> None:
    """Create and delete a hidden file in ``folder``, as every writer here does."""
    probe = folder / f".daw-bridge-probe-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as error:
        raise OutputFolderError(
            f"Cannot write into the output folder {folder} ({error.strerror}).",
            f"{_CHOOSE_ANOTHER}, or make this one writable: check its permissions, and "
            "that its drive is not mounted read-only.",
        ) from None


#: A drive with less free space than this after a failed write is taken to be full.
_FULL_BYTES = 2**20


def is_out_of_space(error: BaseException, folder: Path) -> bool:
    """Whether ``error``, raised while writing into ``folder``, means its drive is full.

    Some writers (pedalboard) report a full drive only as a failed write, so the
    free space is looked at too: call this before the partial files are removed.
    """
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder).free < _FULL_BYTES
    except OSError:
        return False


def ensure_writable(final: Path, overwrite: bool) -> None:
    """Fail early, before any work, if ``final`` exists and may not be replaced."""
    if final.exists() and not overwrite:
        raise OutputExistsError(
            f"{final} already exists.",
            "Pass --overwrite to replace it, or choose another output folder with --out.",
        )


def publish(temporary: Path, final: Path, overwrite: bool) -> None:
    """Move a finished temporary file to its final name, atomically."""
    if overwrite:
        os.replace(temporary, final)
        return
    try:
        # A hard link fails if ``final`` exists, so no other writer is clobbered.
        os.link(temporary, final)
    except FileExistsError:
        temporary.unlink(missing_ok=True)
        ensure_writable(final, overwrite=False)
        raise
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # Filesystems without hard links (FAT, some network shares).
        ensure_writable(final, overwrite=False)
        os.rename(temporary, final)
        return
    temporary.unlink()


@contextlib.contextmanager
def atomic_output(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``final``."""
    final = Path(final)
    ensure_writable(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(final)
    try:
        yield temporary
        publish(temporary, final, overwrite)
    finally:
        temporary.unlink(missing_ok=True)


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file's bytes in hex, read in 1 MiB blocks (weights can be 84 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
