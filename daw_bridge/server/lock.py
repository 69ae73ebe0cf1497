"""One server per state folder.

Two servers on one state folder would each take the other's jobs for ones a
crash interrupted, and delete the other's staged stems. The first server holds
an advisory lock on ``server.lock`` (with its pid and address in it); the
operating system drops the lock when the process ends, kill -9 included, so a
crashed server never blocks the next one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from daw_bridge.errors import StateFolderError

LOCK_NAME = "server.lock"
#: Windows locks byte ranges and refuses reads of a locked one: lock a byte far past the text.
_WINDOWS_LOCK_OFFSET = 2**20


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._descriptor: int | None = None

    def acquire(self, address: str) -> None:
        """Take the lock and record ``address``; refuse, naming the holder, if another has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(descriptor):
            holder = os.read(descriptor, 4096).decode("utf-8", "replace").split(maxsplit=1)
            os.close(descriptor)
            pid = holder[0] if holder else "?"
            serving = holder[1].strip() if len(holder) > 1 else "an address not recorded yet"
            # One line (no separate fix): it is what `serve` prints before it exits.
            raise StateFolderError(
                f"Another daw-bridge server (pid {pid}) is using the state folder "
                f"{self.path.parent}, serving on {serving}: use that one, or give this one "
                "another --state-dir."
            )
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()} {address}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        """Let the next server in; the file stays (removing it would race a new holder)."""
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._descriptor, 0)
            os.close(self._descriptor)  # closing drops the lock
            self._descriptor = None


def _try_lock(descriptor: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(descriptor, 0, os.SEEK_SET)
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held by another process
        return False
    return True
