"""Audio sent to the server as bytes, in chunks, never as one large message.

A client that cannot give the server a path (another machine, a rendered clip)
announces a file (name, size, SHA-256), sends it in chunks well under the
message cap, then submits a job naming the upload. Each chunk is written and
hashed as it arrives, so no message holds up the server's loop for long and a
whole file is never in memory. Uploads live in a private temporary folder made
for this server run, never in the server's state or cache folders; a job's
upload is deleted when the job ends, an upload nobody submits is deleted after
:data:`IDLE_SECONDS`, and the folder goes when the server stops (or, after a
kill, when it next starts).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from daw_bridge.errors import DawBridgeError

#: Bytes of audio per chunk message (base64 makes it 5.3 MiB, a third of the cap).
CHUNK_BYTES = 4 * 2**20
#: Largest file one upload may announce (about 3 hours of 96 kHz 32-bit stereo).
MAX_UPLOAD_BYTES = 4 * 2**30
#: Uploads one key may have open (announced, not yet submitted) at a time.
MAX_OPEN_PER_KEY = 4
#: An upload that receives nothing and is not submitted for this long is deleted.
IDLE_SECONDS = 600.0
#: Space left free on the uploads' drive after an announced upload.
_SPARE_BYTES = 256 * 2**20
_RECORD = "uploads-folder"  # in the state folder: where this run's uploads are


@dataclass
class _Upload:
    owner: str
    path: Path
    size: int
    sha256: str
    received: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    touched: float = field(default_factory=time.monotonic)
    name: str = ""  # as announced, without folders: what a remote job's manifest shows


class Uploads:
    """This server run's uploads: open ones by id, and those handed to jobs."""

    def __init__(self, state_dir: Path) -> None:
        self._record = Path(state_dir) / _RECORD
        self.folder: Path | None = None
        self._open: dict[str, _Upload] = {}
        self._claimed: dict[str, Path] = {}
        self._names: dict[str, str] = {}

    def start(self) -> None:
        """Remove what a killed earlier run left, then make this run's private folder."""
        with contextlib.suppress(OSError, ValueError):
            _remove_own_folder(Path(self._record.read_text(encoding="utf-8").strip()))
        self.folder = Path(tempfile.mkdtemp(prefix="daw-bridge-uploads-"))  # mode 0700
        self._record.write_text(str(self.folder), encoding="utf-8")

    def stop(self) -> None:
        if self.folder is not None:
            _remove_own_folder(self.folder)
            self._record.unlink(missing_ok=True)
            self.folder = None

    def begin(self, owner: str, name: str, size: int, sha256: str) -> str:
        """Announce an upload of ``size`` bytes; its id."""
        if not 0 < size <= MAX_UPLOAD_BYTES:
            raise DawBridgeError(
                f"An upload must be 1 byte to {MAX_UPLOAD_BYTES / 2**30:.0f} GiB, not {size:,} "
                "bytes.",
                "Send a shorter file (or a compressed format such as FLAC).",
            )
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise DawBridgeError(
                "An upload's sha256 must be 64 lowercase hex digits.",
                "Send hashlib.sha256(data).hexdigest() of the file's bytes.",
            )
        if sum(upload.owner == owner for upload in self._open.values()) >= MAX_OPEN_PER_KEY:
            raise DawBridgeError(
                f"This client has {MAX_OPEN_PER_KEY} uploads open already.",
                "Submit or finish them first (unused ones are dropped after "
                f"{IDLE_SECONDS / 60:.0f} minutes).",
            )
        folder = self._folder()
        free = shutil.disk_usage(folder).free
        if free < size + _SPARE_BYTES + self._pending_bytes():
            raise DawBridgeError(
                f"Not enough space for a {size / 2**20:.0f} MiB upload in {folder} "
                f"({free / 2**20:.0f} MiB free).",
                "Free some space on that drive (or start the server with TMPDIR on another "
                "drive), then send the file again.",
            )
        upload_id = uuid.uuid4().hex[:16]
        path = folder / f"{upload_id}{_suffix(name)}"  # formats are read by their suffix
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(descriptor)
        shown = name.replace("\\", "/").rpartition("/")[2]
        self._open[upload_id] = _Upload(owner, path, size, sha256, name=shown)
        return upload_id

    def append(
        self, owner: str, upload_id: str, offset: int, data: str, sha256: str | None = None
    ) -> int:
        """Write one base64 chunk at ``offset`` (which must be the bytes received so far).

        With ``sha256`` (the chunk's own), a chunk whose bytes differ is refused before
        it is written, so its sender can send that chunk again instead of the file.
        """
        upload = self._mine(owner, upload_id)
        if offset != upload.received:
            raise DawBridgeError(
                f"Upload {upload_id} has {upload.received:,} bytes; a chunk at offset "
                f"{offset:,} does not follow on.",
                "Send the chunks in order, each starting where the last one ended.",
            )
        try:
            chunk = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise DawBridgeError(
                "A chunk of the upload is not valid base64.", "Send that chunk again."
            ) from None
        if sha256 is not None and hashlib.sha256(chunk).hexdigest() != sha256.lower():
            raise DawBridgeError(
                f"The chunk of upload {upload_id} at offset {offset:,} does not match its "
                "sha256: its bytes changed on the way; nothing of it was written.",
                "Send that chunk again.",
            )
        if upload.received + len(chunk) > upload.size:
            raise DawBridgeError(
                f"Upload {upload_id} was announced as {upload.size:,} bytes; this chunk "
                "goes past its end.",
                "Announce the file's true size.",
            )
        try:
            with open(upload.path, "ab") as handle:
                handle.write(chunk)
        except OSError as error:
            self._drop(upload_id)
            raise DawBridgeError(
                f"Cannot save the upload in {upload.path.parent} "
                f"({error.strerror or error}); it was dropped.",
                "Free some space on that drive (or start the server with TMPDIR on another "
                "drive), then send the file again.",
            ) from None
        upload.hasher.update(chunk)
        upload.received += len(chunk)
        upload.touched = time.monotonic()
        return upload.received

    def claim(self, owner: str, upload_id: str) -> None:
        """Hand a complete, intact upload to a job (checked before the job is created)."""
        upload = self._mine(owner, upload_id)
        if upload.received != upload.size:
            raise DawBridgeError(
                f"Upload {upload_id} is incomplete: {upload.received:,} of {upload.size:,} "
                "bytes arrived.",
                "Send the remaining chunks, then submit.",
            )
        if upload.hasher.hexdigest() != upload.sha256:
            self._drop(upload_id)
            raise DawBridgeError(
                f"Upload {upload_id} does not match its sha256: the bytes changed on the "
                "way; it was dropped.",
                "Send the file again.",
            )
        del self._open[upload_id]
        self._claimed[upload_id] = upload.path
        self._names[upload_id] = upload.name

    def path(self, upload_id: str) -> Path:
        """The file of an upload handed to a job."""
        path = self._claimed.get(upload_id)
        if path is None:
            raise DawBridgeError(
                f"Upload {upload_id} is gone (the server restarted since it was sent).",
                "Send the file again.",
            )
        return path

    def name(self, upload_id: str) -> str:
        """The file name its sender announced (no folders)."""
        return self._names.get(upload_id, "")

    def release(self, upload_id: str) -> None:
        """Its job has ended: delete the file."""
        self._names.pop(upload_id, None)
        path = self._claimed.pop(upload_id, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def expire(self, now: float | None = None) -> None:
        """Drop open uploads idle for :data:`IDLE_SECONDS`."""
        now = time.monotonic() if now is None else now
        for upload_id, upload in list(self._open.items()):
            if now - upload.touched > IDLE_SECONDS:
                self._drop(upload_id)

    def _mine(self, owner: str, upload_id: str) -> _Upload:
        upload = self._open.get(upload_id)
        if upload is None or upload.owner != owner:  # another key's upload is not there
            raise DawBridgeError(
                f"No open upload {upload_id!r} on this server.",
                "Announce the file with an 'upload' message first (uploads idle for "
                f"{IDLE_SECONDS / 60:.0f} minutes are dropped).",
            )
        return upload

    def _drop(self, upload_id: str) -> None:
        upload = self._open.pop(upload_id, None)
        if upload is not None:
            upload.path.unlink(missing_ok=True)

    def _pending_bytes(self) -> int:
        return sum(upload.size - upload.received for upload in self._open.values())

    def _folder(self) -> Path:
        if self.folder is None:
            self.start()
        assert self.folder is not None
        return self.folder


def _suffix(name: str) -> str:
    suffix = Path(name.replace("\\", "/")).suffix.lower()
    return suffix if suffix[1:].isalnum() and len(suffix) <= 8 else ""


def _remove_own_folder(folder: Path) -> None:
    """Remove ``folder`` only if it is one of ours: a real folder of this user, private."""
    try:
        facts = os.lstat(folder)
    except OSError:
        return
    mine = not hasattr(os, "getuid") or facts.st_uid == os.getuid()
    if stat.S_ISDIR(facts.st_mode) and mine and folder.name.startswith("daw-bridge-uploads-"):
        shutil.rmtree(folder, ignore_errors=True)
