"""The job store: records that cannot be read never stop a start, a full drive is named,
and what it keeps is bounded (issue 14, points 3 and 5)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from daw_bridge.errors import StateFolderError
from daw_bridge.server.jobs import JobStore
from tests.drives import fill, small_drive

DAY = 86400.0


def record(job_id: str, state: str = "done", **fields) -> str:
    return json.dumps(
        {
            "id": job_id,
            "request": {"type": "submit", "source": {"path": "/a.wav"}, "out_dir": "/out"},
            "state": state,
            "progress": 1.0,
            "result": {"folder": "/out"},
            "error": None,
            "created": time.time(),
            **fields,
        }
    )


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def finished_job(store: JobStore) -> str:
    job = store.create(b"c", {"type": "submit", "source": {"path": "/a.wav"}, "out_dir": "/o"})
    job.state = "done"
    store.save(job)
    return job.id


def test_records_that_are_not_jobs_are_moved_aside_at_start(tmp_path, caplog):
    root = tmp_path / "jobs"
    JobStore(root)  # the layout
    empty, garbage, unknown, renamed, interrupted = (new_id() for _ in range(5))
    (root / "manifest.json").write_text('{"format": "daw-bridge-stems/1"}')  # out_dir = jobs
    (root / "vocals.wav").write_bytes(b"RIFF")
    (root / f"{empty}.json").write_text("")
    (root / f"{garbage}.json").write_text("{not json")
    (root / f"{unknown}.json").write_text(record(unknown, state="exploded"))
    (root / f"{renamed}.json").write_text(record(new_id()))
    (root / f"{interrupted}.json").write_text(record(interrupted, state="running"))
    for job_id in (empty, garbage, unknown, renamed, interrupted):
        (root / "active" / job_id).touch()
    (root / f".{new_id()}.a1b2c3.tmp").write_text('{"half')  # a save a crash cut short

    recovered = JobStore(root).recover()

    assert [job.id for job in recovered] == [interrupted]
    assert recovered[0].state == "failed" and "stopped" in recovered[0].error["problem"]
    assert {path.name for path in root.iterdir()} == {"active", f"{interrupted}.json", "rejected"}
    moved = sorted(path.name.rsplit(".", 1)[0] for path in (root / "rejected").iterdir())
    assert moved == sorted(
        ["manifest.json", "vocals.wav", *(f"{i}.json" for i in (empty, garbage, unknown, renamed))]
    )
    assert list((root / "active").iterdir()) == []
    assert "moved" in caplog.text and "manifest.json" in caplog.text


def test_a_damaged_finished_record_is_moved_aside_when_asked_for(tmp_path):
    root = tmp_path / "jobs"
    store = JobStore(root)
    job_id = new_id()
    (root / f"{job_id}.json").write_text("")
    assert store.get(job_id) is None
    assert not (root / f"{job_id}.json").exists() and len(list(store.rejected.iterdir())) == 1


def test_start_up_reads_only_the_records_of_jobs_that_were_running(tmp_path, monkeypatch):
    root = tmp_path / "jobs"
    store = JobStore(root)
    for _ in range(200):
        finished_job(store)
    running = store.create(b"c", {"type": "submit", "source": {"path": "/a"}, "out_dir": "/o"})
    read: list[str] = []
    real_read_text = Path.read_text

    def counting(path: Path, *args, **kwargs) -> str:
        read.append(path.name)
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    recovered = JobStore(root).recover()
    assert [job.id for job in recovered] == [running.id]
    assert read == [f"{running.id}.json"]


def test_finished_records_are_pruned_by_age_and_count_and_active_ones_never(tmp_path):
    store = JobStore(tmp_path / "jobs", keep_days=7, keep_jobs=10)
    store.keep_jobs = 1000  # no pruning while the history is made
    ids = [finished_job(store) for _ in range(25)]
    now = time.time()
    for age, job_id in enumerate(reversed(ids)):  # the last one made is the newest
        stamp = now - age * 60 - (8 * DAY if job_id == ids[-2] else 0)
        os.utime(store.root / f"{job_id}.json", (stamp, stamp))
    active = store.create(b"c", {"type": "submit", "source": {"path": "/a"}, "out_dir": "/o"})
    old = time.time() - 30 * DAY
    os.utime(store.root / f"{active.id}.json", (old, old))
    store.keep_jobs = 10
    store.prune()
    kept = {path.stem for path in store.root.glob("*.json")}
    assert kept == {*ids[-11:], active.id} - {ids[-2]}  # the 10 newest finished, bar the old one
    assert store.get(ids[0]) is None and store.get(active.id) is active


def test_pruning_keeps_up_while_jobs_finish(tmp_path):
    store = JobStore(tmp_path / "jobs", keep_jobs=20)
    for _ in range(100):
        finished_job(store)
    assert len(list(store.root.glob("*.json"))) <= 22  # checked every tenth of the bound


def test_memory_holds_active_jobs_and_a_few_recent_ones(tmp_path):
    store = JobStore(tmp_path / "jobs")
    ids = [finished_job(store) for _ in range(300)]
    held = len(store._active) + len(store._recent)
    assert held <= 64
    assert store.get(ids[0]).state == "done"  # still there, read back from its record


def test_a_full_drive_names_the_records_folder_and_keeps_the_old_record(tmp_path):
    with small_drive(tmp_path / "drive") as drive:
        store = JobStore(drive / "jobs")
        job = store.create(b"c", {"type": "submit", "source": {"path": "/a"}, "out_dir": "/o"})
        before = (store.root / f"{job.id}.json").read_text()
        filler = fill(drive)
        job.state = "running"
        with pytest.raises(StateFolderError) as refused:
            store.save(job)
        assert str(store.root) in refused.value.problem
        assert "No space left" in refused.value.problem and "--state-dir" in refused.value.fix
        assert (store.root / f"{job.id}.json").read_text() == before
        assert {path.name for path in store.root.iterdir()} == {"active", f"{job.id}.json"}
        with pytest.raises(StateFolderError):
            store.create(b"c", {"type": "submit", "source": {"path": "/a"}, "out_dir": "/o"})
        assert store.active() == [job]  # the refused job is not left behind in memory
        filler.unlink()
        job.state = "done"
        store.save(job)
        assert store.active() == [] and '"done"' in (store.root / f"{job.id}.json").read_text()
