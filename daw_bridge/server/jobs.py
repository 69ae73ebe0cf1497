"""Jobs: what was asked, how far it got, and its result, kept on disk by id.

Records are rewritten atomically at every state change, so a client can fetch
a result by id after it disconnected, and a restarted server knows which jobs
a crash interrupted.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daw_bridge.protocol import FINAL_STATES


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


_RECORDED = ("id", "request", "state", "progress", "result", "error", "created")


class JobStore:
    """Jobs in memory, each mirrored to ``root/<id>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def create(self, client: bytes, request: dict[str, Any]) -> Job:
        job = Job(id=uuid.uuid4().hex[:16], client=client, request=request)
        with self._lock:
            self._jobs[job.id] = job
        self.save(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None and job_id.isalnum():
            job = self._load(job_id)
        return job

    def active(self) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if not job.final]

    def save(self, job: Job) -> None:
        record = {name: getattr(job, name) for name in _RECORDED}
        path = self.root / f"{job.id}.json"
        temporary = path.with_name(f".{job.id}.{uuid.uuid4().hex[:6]}.tmp")
        temporary.write_text(json.dumps(record), encoding="utf-8")
        os.replace(temporary, path)

    def _load(self, job_id: str) -> Job | None:
        path = self.root / f"{job_id}.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        job = Job(client=b"", **record)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def recover(self) -> list[Job]:
        """Mark jobs a killed server left unfinished as failed; return them."""
        interrupted = []
        for path in self.root.glob("*.json"):
            job = self._load(path.stem)
            if job is not None and not job.final:
                job.state = "failed"
                job.error = {
                    "problem": "The server stopped while this job was running.",
                    "fix": "Submit the job again.",
                }
                self.save(job)
                interrupted.append(job)
        return interrupted
