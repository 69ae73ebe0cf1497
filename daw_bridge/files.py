"""Safe writing of files the user will own.

A stem or manifest appears under its final name complete or not at all: we write
to a hidden temporary name in the same folder and rename it into place. Unless
the caller asks, an existing file is never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from daw_bridge.errors import OutputExistsError


def temporary_sibling(final: Path) -> Path:
    """A hidden name next to ``final`` that keeps its extension (writers pick the format by it)."""
    return final.with_name(f".{final.stem}.partial-{uuid.uuid4().hex[:8]}{final.suffix}")


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
