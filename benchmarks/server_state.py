"""Bounded server state: memory after many jobs, and start-up time with a long history.

A real ``daw-bridge serve`` (the ``dsp`` separator, so no weights are needed)
gets 1000 jobs: 990 of a short clip (cache hits after the first) and 10
uploads of a 20 MB WAV sent as audio bytes. Each job's output folder is
removed after it, so only the server's own state grows. Printed: the server's
resident memory (VmRSS) after start-up, after one warm-up job ("fresh") and
after all the jobs; what is left on disk; then the time a server takes from
launch to its first reply, and the job store's start-up work alone, with an
empty history, 1000 finished records and 20000 (a history from before pruning).

    python benchmarks/server_state.py                 # 1000 jobs, 10 uploads of 20 MB
    python benchmarks/server_state.py --jobs 200 --uploads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def _wav(path: Path, seconds: float, seed: int) -> Path:
    from daw_bridge.audio.io import write_audio

    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal((2, int(seconds * 44100)))).astype(np.float32)
    return write_audio(path, samples, 44100)


class _Server:
    def __init__(self, state: Path, env: dict[str, str]) -> None:
        from daw_bridge.client.client import Client

        self.address = _address()
        command = [sys.executable, "-m", "daw_bridge", "serve", "--bind", self.address]
        command += ["--model", "dsp", "--device", "cpu", "--state-dir", str(state)]
        self.log = open(state.parent / f"{state.name}.log", "ab")  # noqa: SIM115
        started = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log, env=env)
        self.client = Client(self.address, timeout=120)  # uploads go in chunks
        self.client.hello()
        self.start_seconds = time.perf_counter() - started

    def stop(self) -> None:
        self.client.shutdown()
        self.client.close()
        self.process.wait(30)
        self.log.close()


def _history(jobs: Path, count: int) -> None:
    """``count`` finished job records as the server writes them, all within a day."""
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / "active").mkdir(exist_ok=True)
    now = time.time()
    for i in range(count):
        job_id = uuid.uuid4().hex[:16]
        record = {
            "id": job_id,
            "request": {"type": "submit", "source": {"path": "/song.wav"}, "out_dir": "/out"},
            "state": "done",
            "progress": 1.0,
            "result": {"folder": "/out", "stems": {"vocals": "/out/vocals.wav"}},
            "error": None,
            "created": now - i,
        }
        path = jobs / f"{job_id}.json"
        path.write_text(json.dumps(record))
        os.utime(path, (now - i, now - i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--upload-mb", type=float, default=20.0)
    parser.add_argument("--starts", type=int, default=3, help="launches per history size")
    args = parser.parse_args()
    from daw_bridge.server.jobs import JobStore

    work = Path(tempfile.mkdtemp(prefix="daw-bridge-state-bench-"))
    env = {**os.environ, "DAW_BRIDGE_CONFIG_DIR": str(work / "config")}
    env["DAW_BRIDGE_CACHE_DIR"] = str(work / "cache")
    os.environ.update(env)  # this process's client uses the same keys
    try:
        clip = _wav(work / "clip.wav", 0.25, seed=1)
        upload_seconds = args.upload_mb * 2**20 / (2 * 4 * 44100)
        upload = _wav(work / "upload.wav", upload_seconds, seed=2).read_bytes()
        state = work / "state"
        server = _Server(state, env)
        pid = server.process.pid
        at_start = _rss_mb(pid)
        out = work / "out"

        uploads: list[str] = []

        def run(job: str) -> None:
            final = server.client.wait(job)
            assert final["state"] == "done", final
            shutil.rmtree(out, ignore_errors=True)

        run(server.client.submit(clip, out))
        uploads.append(server.client.submit_audio(upload, "upload.wav", out))
        run(uploads[-1])
        fresh = _rss_mb(pid)
        every = max(1, args.jobs // max(1, args.uploads))
        started, peak = time.perf_counter(), fresh
        for i in range(args.jobs - 2):
            if i % every == every - 1 and i // every < args.uploads - 1:
                uploads.append(server.client.submit_audio(upload, "upload.wav", out))
                run(uploads[-1])
            else:
                run(server.client.submit(clip, out))
            if i % 50 == 0:
                peak = max(peak, _rss_mb(pid))
        elapsed = time.perf_counter() - started
        after = _rss_mb(pid)
        records = list((state / "jobs").glob("*.json"))
        record_bytes = sum(path.stat().st_size for path in records)
        temporary = Path((state / "uploads-folder").read_text(encoding="utf-8"))
        leftovers = list(temporary.iterdir())  # this run's uploads folder, while it serves
        server.stop()

        print(f"CPU: {_cpu()}; Python {platform.python_version()}")
        print(
            f"{args.jobs} jobs ({args.uploads} uploads of {len(upload) / 2**20:.1f} MB), "
            f"{elapsed:.1f} s"
        )
        print(f"  RSS at start-up     {at_start:7.1f} MB")
        print(f"  RSS fresh           {fresh:7.1f} MB  (after a first job and upload)")
        print(f"  RSS after all jobs  {after:7.1f} MB  ({after - fresh:+.1f} MB; peak {peak:.1f})")
        print(f"  records on disk     {len(records)} ({record_bytes / 2**10:.0f} KiB)")
        print(f"  uploads left in the server's upload folder: {len(leftovers)} of {len(uploads)}")

        print("Start-up with a history of finished jobs (launch to first reply; recover() alone):")
        for count in (0, 1000, 20000):
            launches, recovers = [], []
            for _ in range(args.starts):
                history = work / f"history-{count}"
                shutil.rmtree(history, ignore_errors=True)
                _history(history / "jobs", count)
                started = time.perf_counter()
                JobStore(history / "jobs").recover()
                recovers.append(time.perf_counter() - started)
                shutil.rmtree(history, ignore_errors=True)
                _history(history / "jobs", count)
                launched = _Server(history, env)
                launches.append(launched.start_seconds)
                launched.stop()
                kept = len(list((history / "jobs").glob("*.json")))
            print(
                f"  {count:6d} records: launch {statistics.median(launches):.2f} s "
                f"(min {min(launches):.2f}), recover() {1000 * statistics.median(recovers):.1f} "
                f"ms, {kept} records kept"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
