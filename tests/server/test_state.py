"""The server's state and deliveries survive faults, each tried on a real server process
(issue 14, points 3 to 5): a full drive, kill -9 while stems are delivered, records
that are not jobs, a second server on the same state folder, a busy port, and a
history and uploads that would otherwise grow for ever."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from daw_bridge.client.client import Client
from daw_bridge.errors import DawBridgeError
from daw_bridge.protocol import FINAL_STATES
from tests.conftest import ServerProcess, free_address, free_port, noise, write_wav
from tests.drives import fill, small_drive

DEADLINE_S = 120.0
#: The classical separator: no weights, no model export, so these servers start quickly.
DSP = Path("dsp")


def finish(client: Client, job: str) -> dict:
    """Follow ``job`` to its end, failing the test if it takes longer than the deadline."""
    deadline = time.monotonic() + DEADLINE_S

    def in_time(event: dict) -> None:
        if event["state"] not in FINAL_STATES and time.monotonic() > deadline:
            raise AssertionError(f"job {job} still {event['state']} after {DEADLINE_S} s")

    return client.wait(job, in_time)


def wait_for(condition, what: str, seconds: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.002)


def everything(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included."""
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def serve(state: Path, bind: str, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``daw-bridge serve`` expecting it to stop by itself."""
    command = [sys.executable, "-m", "daw_bridge", "serve", "--bind", bind, "--model", "dsp"]
    return subprocess.run(
        [*command, "--device", "cpu", "--state-dir", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DAW_BRIDGE_CACHE_DIR": str(state / "w")},
    )


@contextlib.contextmanager
def running(model: Path, state: Path, *extra: str, env: dict[str, str] | None = None):
    """A real server whose state folder is ``state`` itself."""
    server = ServerProcess(model, state, "--state-dir", str(state), *extra, env=env)
    try:
        yield server
    finally:
        server.kill()


# -- point 3: the worker never dies; one server per state folder ------------------------


def test_a_full_state_drive_fails_that_job_clearly_and_the_next_job_runs(tmp_path):
    """Before: the worker thread died saving the job's record; every later job stayed
    queued for ever while hello still answered."""
    long = write_wav(tmp_path / "long.wav", noise(seconds=40.0, seed=1))
    short = write_wav(tmp_path / "short.wav", noise(seconds=1.0, seed=2))
    with small_drive(tmp_path / "state", "64m") as state, running(DSP, state) as server:
        jobs = state / "jobs"
        with Client(server.address, timeout=20) as client:
            busy = client.submit(long, tmp_path / "long")
            wait_for(lambda: client.result(busy)["state"] == "running", "running")
            queued = client.submit(short, tmp_path / "queued")
            filler = fill(state)
            client.cancel(busy)
            failed = finish(client, queued)  # its record cannot be saved as running
            assert failed["state"] == "failed", failed
            assert str(jobs) in failed["error"]["problem"]
            assert "No space left" in failed["error"]["problem"]
            assert "Free some space" in failed["error"]["fix"]
            with pytest.raises(DawBridgeError) as refused:  # a new job cannot be recorded
                client.submit(short, tmp_path / "refused")
            assert str(jobs) in refused.value.problem and "--state-dir" in refused.value.fix
            filler.unlink()
            after = finish(client, client.submit(short, tmp_path / "after"))
            assert after["state"] == "done", after
        assert server.process.poll() is None


def test_a_second_server_on_the_same_state_folder_names_the_first_and_leaves_it_alone(
    tmp_path,
):
    """Before: the second one marked the first one's job failed and deleted its staging."""
    long = write_wav(tmp_path / "long.wav", noise(seconds=60.0, seed=3))
    state = tmp_path / "state"
    with running(DSP, state) as first, Client(first.address, timeout=20) as client:
        job = client.submit(long, tmp_path / "out")
        wait_for(lambda: list((state / "stems").glob(".staging-*")), "staging")
        second = serve(state, free_address())
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert first.address in lines[0] and str(state) in lines[0]
        assert list((state / "stems").glob(".staging-*"))  # the first one's work is untouched
        assert client.result(job)["state"] == "running"  # not marked failed
        client.cancel(job)  # (its end is not the point, and would take half a minute)
        assert finish(client, job)["state"] == "cancelled"
    with running(DSP, state):  # the lock went with the first server, killed with -9
        pass


def test_a_busy_port_is_a_one_line_message(tmp_path):
    """Before: a traceback."""
    port = free_port()
    with zmq.Context.instance().socket(zmq.ROUTER) as taken:
        taken.bind(f"tcp://127.0.0.1:{port}")
        refused = serve(tmp_path / "state", f"tcp://127.0.0.1:{port}")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"daw-bridge: error: tcp://127.0.0.1:{port} is already in use by another program: "
        "stop it, or pass another --bind."
    ]


def test_records_that_are_not_jobs_never_stop_a_start(tmp_path):
    """Before: a manifest or an empty record in the jobs folder stopped every start."""
    state = tmp_path / "state"
    (state / "jobs" / "active").mkdir(parents=True)
    (state / "jobs" / "manifest.json").write_text('{"format": "daw-bridge-stems/1"}')
    (state / "jobs" / "0123456789abcdef.json").write_text("")
    (state / "jobs" / "active" / "0123456789abcdef").touch()
    with running(DSP, state) as server, Client(server.address, timeout=20) as client:
        assert client.hello()["protocol"] == 1
    assert sorted(path.name for path in (state / "jobs").iterdir()) == ["active", "rejected"]
    assert len(list((state / "jobs" / "rejected").iterdir())) == 2
    assert "moved" in server.log.read_text()


def test_stems_are_never_delivered_into_the_state_folder(tmp_path):
    """Before: any client could stop every future start with ``out_dir = <state>/jobs``."""
    song = write_wav(tmp_path / "song.wav", noise(seconds=1.0, seed=4))
    state = tmp_path / "state"
    for _ in range(2):  # and the server starts again afterwards
        with running(DSP, state) as server, Client(server.address, timeout=20) as client:
            try:
                outcome = finish(client, client.submit(song, state / "jobs"))
            except DawBridgeError as refused:  # refused at once is as good
                outcome = {"state": "failed", "error": {"problem": refused.problem}}
            assert outcome["state"] == "failed" and str(state) in outcome["error"]["problem"]
    assert not list(state.rglob("*.wav"))


# -- point 4: all-or-nothing delivery ---------------------------------------------------


def test_a_full_output_drive_fails_the_job_leaves_nothing_and_the_next_job_runs(tmp_path):
    song = write_wav(tmp_path / "song.wav", noise(seconds=3.0, seed=5))
    with (
        small_drive(tmp_path / "drive", "1m") as drive,
        running(DSP, tmp_path / "state") as server,
        Client(server.address, timeout=20) as client,
    ):
        failed = finish(client, client.submit(song, drive / "stems", midi=["drums"]))
        assert failed["state"] == "failed", failed
        assert f"output folder {drive / 'stems'} is full" in failed["error"]["problem"]
        assert "Free some space" in failed["error"]["fix"]
        assert everything(drive) == []  # no stems, no hidden partial files, no folder
        assert finish(client, client.submit(song, tmp_path / "fine"))["state"] == "done"


def test_kill_9_during_delivery_leaves_no_partial_set_and_the_restart_clears_the_rest(tmp_path):
    """Before: some stems and a manifest listing all of them under final names, and
    hidden partial files nothing removed."""
    song = write_wav(tmp_path / "song.wav", noise(seconds=20.0, seed=6))
    state, out = tmp_path / "state", tmp_path / "out"
    options = {"midi": ["drums", "bass"], "preset": "karaoke"}
    with running(DSP, state) as server, Client(server.address, timeout=20) as client:
        first = finish(client, client.submit(song, tmp_path / "first", **options))
        assert first["state"] == "done", first
        # The same audio again is a cache hit: the whole job is its delivery.
        client.submit(song, out, **options)
        wait_for(lambda: len(everything(out)) >= 4, "delivering")
        server.process.kill()
        server.process.wait()
    left = everything(out)
    visible = [name for name in left if not any(p.startswith(".") for p in Path(name).parts)]
    complete = sorted(p.relative_to(tmp_path / "first") for p in (tmp_path / "first").rglob("*"))
    assert visible in ([], [str(p) for p in complete]), left
    with running(DSP, state):
        pass
    assert everything(out) == ([] if visible == [] else [str(p) for p in complete])


# -- point 5: bounded state -------------------------------------------------------------


def test_uploads_leave_neither_memory_nor_disk_and_records_stay_small(tmp_path):
    """Before: each upload stayed in the server's memory and in its record for ever."""
    audio = write_wav(tmp_path / "up.wav", noise(seconds=30.0, seed=7)).read_bytes()  # 10 MB
    state = tmp_path / "state"
    with running(DSP, state) as server, Client(server.address, timeout=60) as client:
        first = finish(client, client.submit_audio(audio, "up.wav", tmp_path / "u0"))
        assert first["state"] == "done", first
        before = client.status()["rss_mb"]
        jobs = [client.submit_audio(audio, "up.wav", tmp_path / f"u{i}") for i in range(1, 6)]
        assert [finish(client, job)["state"] for job in jobs] == ["done"] * 5
        after = client.status()["rss_mb"]
        uploads = Path((state / "uploads-folder").read_text(encoding="utf-8"))
        assert list(uploads.iterdir()) == []  # each removed with its job
    assert after - before < 20, (before, after)  # 5 uploads of 10 MB were 70 MB of base64
    assert max(path.stat().st_size for path in (state / "jobs").glob("*.json")) < 10_000


def test_finished_jobs_are_pruned_while_serving_and_at_start(tmp_path):
    song = write_wav(tmp_path / "song.wav", noise(seconds=0.5, seed=8))
    state = tmp_path / "state"
    with running(DSP, state, "--keep-jobs", "5") as server, Client(server.address) as client:
        jobs = [client.submit(song, tmp_path / f"o{i}") for i in range(12)]
        assert [finish(client, job)["state"] for job in jobs] == ["done"] * 12
        on_disk = {path.stem for path in (state / "jobs").glob("*.json")}
        assert len(on_disk) <= 6 and jobs[-1] in on_disk
    old = time.time() - 8 * 86400
    for path in (state / "jobs").glob("*.json"):
        os.utime(path, (old, old))
    with running(DSP, state, "--keep-days", "7"):
        pass
    assert list((state / "jobs").glob("*.json")) == []
