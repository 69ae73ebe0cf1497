"""Output folders nothing can be written to, for the tests that each writing command
refuses them before any work (issue 13, point 6)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Each kind of unusable output folder, by test id.
UNUSABLE = ["a file", "under a file", "under /proc", "read-only", "under a read-only folder"]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (created if needed) made read-only, for this process and its children.

    Permission bits do not stop root, so as root the folder is bind-mounted
    read-only onto itself: the kernel then refuses every write into it, root's
    too, as on a read-only drive. A normal user gets plain permission bits.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("mount") is None:
        pytest.skip("running as root, whom permission bits do not stop, and no `mount` command")
    bound = subprocess.run(["mount", "--bind", folder, folder], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(
            "running as root, whom permission bits do not stop, and a read-only bind mount "
            f"is not allowed here (no CAP_SYS_ADMIN?): {bound.stderr.strip()}"
        )
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", folder], capture_output=True, check=True)
        yield folder
    finally:
        subprocess.run(["umount", folder], capture_output=True, check=True)


@contextlib.contextmanager
def unusable_folder(case: str, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An output folder of kind ``case`` and words its refusal must contain."""
    if case == "a file":
        taken = tmp_path / "a file.txt"
        taken.write_text("not a folder")
        yield taken, "is a file, not a folder"
    elif case == "under a file":
        taken = tmp_path / "a file.txt"
        taken.write_text("not a folder")
        yield taken / "stems", f"{taken} is a file"
    elif case == "under /proc":
        yield Path("/proc/daw-bridge-test/stems"), "Cannot create"
    elif case == "read-only":
        with read_only(tmp_path / "read-only") as folder:
            yield folder, "Cannot write into"
    elif case == "under a read-only folder":
        with read_only(tmp_path / "read-only") as folder:
            yield folder / "new" / "stems", "Cannot create"
    else:
        raise ValueError(case)
