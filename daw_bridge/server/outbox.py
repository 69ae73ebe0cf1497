"""Remote jobs' files, kept in the server's private state until their client fetches them.

A client on another machine cannot name a folder on the server's machine, and
the server must not write where a guest says. So a job submitted without an
output folder delivers into its own area, ``<state>/outbox/<job id>/`` (the
state folder is the owner's only; each area is 0700), and its result lists each
file with its size and SHA-256. Its client fetches them in bounded chunks, then
says ``delivered``: the area goes and the job is forgotten. An area nobody
fetches goes with its job record (``--keep-days``, ``--keep-jobs``), an area
of a job that failed or was cancelled at once, and what a killed run left at
the next start.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from daw_bridge.errors import DawBridgeError
from daw_bridge.files import file_sha256
from daw_bridge.server.uploads import CHUNK_BYTES

_ID_CHARS = set("0123456789abcdef")


class Outbox:
    """``root/<job id>/`` areas holding what remote jobs delivered."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, job_id: str) -> Path:
        """The job's area (made, private, if missing): where its delivery goes."""
        if not (len(job_id) == 16 and set(job_id) <= _ID_CHARS):
            raise ValueError(f"not a job id: {job_id!r}")  # never a path of a caller's
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        area = self.root / job_id
        area.mkdir(mode=0o700, exist_ok=True)
        return area

    def listing(self, job_id: str) -> list[dict[str, Any]]:
        """Each file of a finished delivery: relative path, size and SHA-256."""
        area = self.root / job_id
        files = []
        for root, folders, names in os.walk(area):
            folders.sort()
            for name in sorted(names):
                path = Path(root) / name
                files.append(
                    {
                        "path": path.relative_to(area).as_posix(),
                        "size": path.stat().st_size,
                        "sha256": file_sha256(path),
                    }
                )
        return files

    def read(
        self, job_id: str, files: list[dict[str, Any]], relative: str, offset: int, size: int
    ) -> dict[str, Any]:
        """Up to ``size`` bytes (at most a chunk) of a listed file from ``offset``, as base64."""
        entry = next((entry for entry in files if entry.get("path") == relative), None)
        if entry is None or PurePosixPath(relative).is_absolute() or ".." in relative.split("/"):
            raise DawBridgeError(
                f"Job {job_id} delivered no file {relative!r}.",
                "Fetch only the paths its result lists under 'files'.",
            )
        if offset > entry["size"]:
            raise DawBridgeError(
                f"{relative} of job {job_id} is {entry['size']:,} bytes; offset {offset:,} is "
                "past its end.",
                "Fetch from an offset within the file.",
            )
        try:
            with open(self.root / job_id / relative, "rb") as handle:
                handle.seek(offset)
                data = handle.read(min(size, CHUNK_BYTES))
        except FileNotFoundError:
            raise DawBridgeError(
                f"The files of job {job_id} are no longer on the server (delivered already, "
                "or kept past the server's --keep-days).",
                "Split the file again.",
            ) from None
        return {
            "type": "data",
            "job": job_id,
            "path": relative,
            "offset": offset,
            "size": entry["size"],
            "data": base64.b64encode(data).decode("ascii"),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def remove(self, job_id: str) -> None:
        """The job's area and all in it (only a folder of ours: never follows a link)."""
        area = self.root / job_id
        if area.is_dir() and not area.is_symlink():
            shutil.rmtree(area, ignore_errors=True)

    def prune(self, wanted: Callable[[str], bool]) -> None:
        """Remove the areas whose job ``wanted`` says is gone, failed or never ran here.

        Retention follows the job records: a record pruned (``--keep-days``,
        ``--keep-jobs``) makes its area unwanted.
        """
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            with contextlib.suppress(OSError):
                if not wanted(entry.name):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
