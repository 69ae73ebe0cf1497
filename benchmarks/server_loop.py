"""How fast the server answers when no separation is needed, and how long one message can stall it.

1. Cache hits: a 10 s clip is split once, then again into fresh folders; each
   hit is timed from the client's submit to its final event (what a REAPER
   click waits for), next to the job's own time in the worker (``seconds``).
   The server used to poll its socket every 50 ms, so a hit's final event
   waited up to 50 ms for the poll (54 ms median in issue 14). Output folders
   on the cache's drive get hard links; on another drive (``/dev/shm`` here,
   where it is one) copies: both are timed.
2. Stalls: while a second client sends the largest message the server takes,
   a first one keeps asking ``hello``; the slowest answer is the stall.

    python benchmarks/server_loop.py            # 30 hits
    python benchmarks/server_loop.py --hits 100
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _hits(address: str, clip: Path, work: Path, count: int) -> tuple[list[float], list[float]]:
    from daw_bridge.client.client import Client

    with Client(address, timeout=120) as client:
        first = client.wait(client.submit(clip, work / "first"))
        assert first["state"] == "done", first
        time.sleep(0.2)  # as a later click: the entry's file times have settled
        round_trips, in_worker = [], []
        for number in range(count):
            started = time.perf_counter()
            final = client.wait(client.submit(clip, work / f"hit-{number}"))
            round_trips.append(time.perf_counter() - started)
            assert final["state"] == "done" and final["result"]["cached"], final
            in_worker.append(final["result"]["seconds"])
    return round_trips, in_worker


def _other_drive(work: Path) -> Path | None:
    """A fresh folder on a drive other than ``work``'s, where there is one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != work.stat().st_dev:
        return Path(tempfile.mkdtemp(prefix="daw-bridge-loop-", dir=shm))
    return None


def _stall(address: str, message_bytes: int) -> tuple[float, float, str]:
    """Slowest ``hello`` while a message of ``message_bytes`` is sent; baseline; its reply."""
    from daw_bridge.client.client import Client
    from daw_bridge.errors import DawBridgeError

    def slowest_hello(seconds: float) -> float:
        worst, deadline = 0.0, time.monotonic() + seconds
        with Client(address, timeout=30) as client:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                client.hello()
                worst = max(worst, time.perf_counter() - started)
                time.sleep(0.01)
        return worst

    baseline = slowest_hello(1.0)
    data = base64.b64encode(os.urandom(message_bytes * 3 // 4)).decode()
    outcome: list[str] = []

    def send_big() -> None:
        with Client(address, timeout=60) as client:
            try:
                # A chunk of audio for an upload that is not there: decoded, then refused.
                client.request({"type": "chunk", "upload": "0" * 16, "offset": 0, "data": data})
                outcome.append("accepted")
            except DawBridgeError as error:
                outcome.append(error.problem[:100])

    sender = threading.Thread(target=send_big)
    sender.start()
    worst = slowest_hello(4.0)
    sender.join()
    return worst, baseline, outcome[0] if outcome else "no reply"


def main() -> int:
    from tests.conftest import ServerProcess, noise, save_checkpoint, tiny_htdemucs, write_wav

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hits", type=int, default=30)
    parser.add_argument("--message-mb", type=float, default=None, help="default: the server's cap")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="daw-bridge-loop-"))
    checkpoint = save_checkpoint(tiny_htdemucs(), work / "models", "0badc0de")
    clip = write_wav(work / "clip10s.wav", noise(seconds=10.0))
    server = ServerProcess(checkpoint, work / "state")
    other_drive = _other_drive(work)
    try:
        same = _hits(server.address, clip, work / "same-drive", args.hits)
        other = _hits(server.address, clip, other_drive, args.hits) if other_drive else None
        from daw_bridge.protocol import MAX_MESSAGE_BYTES

        size = int(args.message_mb * 2**20) if args.message_mb else MAX_MESSAGE_BYTES - 4096
        worst, baseline, outcome = _stall(server.address, size)
    finally:
        server.kill()
        if other_drive:
            shutil.rmtree(other_drive, ignore_errors=True)
    median = statistics.median
    print(f"\n{_cpu()}, {os.cpu_count()} cores; tiny model, 10 s stereo clip, {args.hits} hits\n")
    print("| cache hit | output folder | median | 90th percentile |")
    print("|---|---|---:|---:|")
    for drive, timings in (("same drive (links)", same), ("other drive (copies)", other)):
        if timings is None:
            print(f"| (no other drive to test) | {drive} | | |")
            continue
        for name, values in zip(("submit to final event (client)", "job time in the worker"),
                                timings, strict=True):  # fmt: skip
            p90 = statistics.quantiles(values, n=10)[-1]
            print(f"| {name} | {drive} | {1000 * median(values):.1f} ms | {1000 * p90:.1f} ms |")
    print(
        f"\nA {size / 2**20:.0f} MiB message ({outcome}): slowest hello meanwhile "
        f"{1000 * worst:.0f} ms (without it: {1000 * baseline:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
