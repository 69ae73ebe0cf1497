"""Jobs: what was asked, how far it got, and its result, kept on disk by id.

Records are rewritten atomically at every state change, so a client can fetch
a result by id after it disconnected, and a restarted server knows which jobs a
crash interrupted. A finished job's record is fsynced, so a power cut leaves its
result or the earlier record, never an empty file; the records of a job that
is still queued or running are not worth that wait (a lost one reads as
interrupted either way). What the store keeps stays bounded: memory holds
the active jobs and a few recent ones; on disk, finished records are pruned by
age and count, and no record holds uploaded audio. Start-up reads only the
records of jobs that were still active (``active/`` holds an empty marker for
each), so it does not slow down as the history grows. A record that cannot be
read (damaged, empty, or not ours) is moved to ``rejected/`` with a warning,
never a crash; ``get`` reads a finished record only when asked for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daw_bridge.errors import StateFolderError
from daw_bridge.protocol import FINAL_STATES, JOB_STATES

log = logging.getLogger(__name__)

#: Finished jobs are kept this many days, and at most this many of them (``serve`` options).
KEEP_DAYS = 7.0
KEEP_JOBS = 1000
_RECENT = 64  # finished jobs kept in memory for quick ``result`` replies
_ID = re.compile(r"[0-9a-f]{16}")
_TEMPORARY = re.compile(r"\.[0-9a-f]{16}\.[0-9a-f]{6}\.tmp")
_INTERRUPTED = {
    "problem": "The server stopped while this job was running.",
    "fix": "Submit the job again.",
}


@dataclass
class Job:
    id: str
    client: bytes = field(repr=False)
    request: dict[str, Any]
    state: str = "queued"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    created: float = field(default_factory=time.time)
    owner: str = ""  # the submitting client's public key; "" in records from before keys
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def public(self) -> dict[str, Any]:
        """What clients see of a job."""
        return {
            "job": self.id,
            "state": self.state,
            "progress": round(self.progress, 4),
            "result": self.result,
            "error": self.error,
        }


_RECORDED = ("id", "request", "state", "progress", "result", "error", "created", "owner")
#: Types a record's fields must have to be read back (``id``, ``request`` and ``state``: below).
_TYPES: dict[str, type | tuple[type, ...]] = {
    "progress": (int, float),
    "created": (int, float),
    "result": (dict, type(None)),
    "error": (dict, type(None)),
    "owner": str,
}


class JobStore:
    """Jobs mirrored to ``root/<id>.json``, readable by the user only."""

    def __init__(
        self, root: Path, keep_days: float = KEEP_DAYS, keep_jobs: int = KEEP_JOBS
    ) -> None:
        self.root = Path(root)
        self.markers = self.root / "active"
        self.rejected = self.root / "rejected"
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.markers.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise self._unwritable(error) from None
        self.keep_seconds = keep_days * 86400
        self.keep_jobs = keep_jobs
        self._active: dict[str, Job] = {}
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._finished_since_prune = 0

    def create(self, client: bytes, request: dict[str, Any], owner: str = "") -> Job:
        job = Job(id=uuid.uuid4().hex[:16], client=client, request=request, owner=owner)
        with self._lock:
            self._active[job.id] = job
        try:
            self._write(job)
            _touch(self.markers / job.id)
        except (StateFolderError, OSError) as error:
            with self._lock:
                self._active.pop(job.id, None)
            with contextlib.suppress(OSError):
                (self.root / f"{job.id}.json").unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise self._unwritable(error) from None
            raise
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._active.get(job_id) or self._recent.get(job_id)
            if job_id in self._recent:
                self._recent.move_to_end(job_id)
        if job is None and _ID.fullmatch(job_id):
            job = self._load(job_id)
        return job

    def active(self) -> list[Job]:
        with self._lock:
            return [job for job in self._active.values() if not job.final]

    def save(self, job: Job) -> None:
        """Write ``job``'s record. A finished job leaves the active set even if that fails
        (:class:`StateFolderError`); its record then still reads as interrupted."""
        if job.final:
            with self._lock:
                self._active.pop(job.id, None)
                self._remember(job)
        self._write(job)
        if job.final:
            with contextlib.suppress(OSError):
                (self.markers / job.id).unlink(missing_ok=True)
            self._finished_since_prune += 1
            if self._finished_since_prune >= max(1, self.keep_jobs // 10):
                self.prune()

    def forget(self, job: Job) -> None:
        """Drop a finished job and its record: a remote job whose files were delivered."""
        with self._lock:
            self._recent.pop(job.id, None)
        with contextlib.suppress(OSError):
            (self.root / f"{job.id}.json").unlink(missing_ok=True)

    def recover(self) -> list[Job]:
        """At start-up: fail the jobs a stopped server left unfinished and return them.

        Also moves aside what is not a record of ours, removes temporary files a
        crash left, and prunes. Reads only the records of unfinished jobs.
        """
        for entry in _entries(self.root):
            if entry.name in ("active", "rejected") and entry.is_dir(follow_symlinks=False):
                continue
            if _TEMPORARY.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            elif not _is_record(entry):
                self._reject(Path(entry.path), "it is not a job record")
        interrupted = []
        for entry in _entries(self.markers):
            job = self._read(entry.name) if _ID.fullmatch(entry.name) else None
            if job is not None and not job.final:
                self._interrupt(job)
                interrupted.append(job)
            with contextlib.suppress(OSError):
                os.unlink(entry.path)  # a leftover marker of a finished, damaged or lost record
        self.prune()
        return interrupted

    def prune(self) -> None:
        """Remove finished records older than the age limit, then the oldest above the count."""
        self._finished_since_prune = 0
        with self._lock:
            busy = set(self._active)
        records = []
        for entry in _entries(self.root):
            job_id = entry.name[: -len(".json")]
            if _is_record(entry) and job_id not in busy:
                with contextlib.suppress(OSError):
                    records.append((entry.stat().st_mtime, job_id))
        now = time.time()
        records.sort(reverse=True)  # newest first
        for rank, (modified, job_id) in enumerate(records):
            if rank >= self.keep_jobs or now - modified > self.keep_seconds:
                with contextlib.suppress(OSError):
                    (self.root / f"{job_id}.json").unlink(missing_ok=True)
                with self._lock:
                    self._recent.pop(job_id, None)
        for entry in _entries(self.rejected):  # kept as long, for a look at what went wrong
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > self.keep_seconds:
                    _remove(Path(entry.path))

    # -- records ------------------------------------------------------------------------

    def _write(self, job: Job) -> None:
        record = {name: getattr(job, name) for name in _RECORDED}
        record["request"] = job.request
        path = self.root / f"{job.id}.json"
        temporary = path.with_name(f".{job.id}.{uuid.uuid4().hex[:6]}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(record))  # a request may name the user's files
                if job.final:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temporary, path)
            if job.final:
                _sync_folder(self.root)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise self._unwritable(error) from None

    def _unwritable(self, error: OSError) -> StateFolderError:
        return StateFolderError(
            f"Cannot save the server's job records in {self.root} ({error.strerror or error}).",
            "Free some space on that drive (or fix its permissions), or start the server "
            "with --state-dir on another drive; then submit the job again.",
        )

    def _read(self, job_id: str) -> Job | None:
        """The job recorded as ``job_id``; a record that is not one is moved aside."""
        path = self.root / f"{job_id}.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            if isinstance(error, UnicodeDecodeError):
                self._reject(path, "it is not text")
            else:
                log.warning("cannot read the job record %s: %s", path, error)
            return None
        try:
            return _from_record(json.loads(text), job_id)
        except ValueError as error:  # json.JSONDecodeError is one too
            self._reject(path, str(error))
            return None

    def _load(self, job_id: str) -> Job | None:
        job = self._read(job_id)
        if job is None:
            return None
        if not job.final:  # not active here: the server that ran it stopped
            self._interrupt(job)
        with self._lock:  # another thread may have loaded it meanwhile: one object per job
            job = self._recent.get(job_id) or job
            self._remember(job)
        return job

    def _interrupt(self, job: Job) -> None:
        job.state, job.error = "failed", dict(_INTERRUPTED)
        try:
            self.save(job)
        except StateFolderError as error:
            log.warning("job %s: %s", job.id, error.problem)

    def _remember(self, job: Job) -> None:
        """Keep a finished job in memory for quick replies (call with the lock held)."""
        self._recent[job.id] = job
        self._recent.move_to_end(job.id)
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    def _reject(self, path: Path, why: str) -> None:
        target = self.rejected / f"{path.name}.{uuid.uuid4().hex[:6]}"
        try:
            self.rejected.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, target)
        except OSError as error:
            log.warning("cannot move %s aside (%s); ignoring it", path, error)
            return
        log.warning("moved %s aside to %s: %s", path, target, why)


def _from_record(record: Any, job_id: str) -> Job:
    """A job from its record; ValueError says why the record is not one."""
    if not isinstance(record, dict):
        raise ValueError("it is not a JSON object")
    if record.get("id") != job_id:
        raise ValueError("its id is not its file name")
    if not isinstance(record.get("request"), dict):
        raise ValueError("it has no request")
    if record.get("state") not in JOB_STATES:
        raise ValueError(f"its state {record.get('state')!r} is unknown")
    for name, kind in _TYPES.items():
        if name in record and (not isinstance(record[name], kind) or record[name] is True):
            raise ValueError(f"its {name} has the wrong type")
    return Job(client=b"", **{name: record[name] for name in _RECORDED if name in record})


def _is_record(entry: os.DirEntry) -> bool:
    name = entry.name
    return (
        name.endswith(".json")
        and bool(_ID.fullmatch(name[: -len(".json")]))
        and entry.is_file(follow_symlinks=False)
    )


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _touch(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut (POSIX; Windows has no folder handles)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
