"""Drives that fill up, for the tests that a full disk fails a job clearly and leaves
nothing behind (issue 14)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_drive(folder: Path, size: str = "1m") -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size`` (root only; skipped with the reason elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (not root?): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(drive: Path) -> Path:
    """Take every free byte of ``drive``; remove the returned file to give them back."""
    filler = drive / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as handle:
        while handle.write(bytes(65536)):
            pass
    return filler
