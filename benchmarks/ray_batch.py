"""``daw-bridge batch`` in-process against ``batch --ray local`` with 1 and 2 workers.

The same 20 songs (the first 20 MUSDB18-7 test previews' ``mixture.flac``, 6.8 s
each, read where they lie in ``../shared/eval``: research licence, never copy
them) go through three runs, one after the other on this machine:

- in-process: the batch as it is, the model in this process;
- Ray, 1 worker with all the cores (``--ray-workers 1 --ray-cpus-per-worker N``):
  the same compute as in-process, so the difference is what Ray adds per song
  (sending the mix and the stems through the object store, the calls);
- Ray, N one-core workers (``--ray-workers N``): songs side by side.

Each run is timed from its first song starting to its last song delivered
(``songs/min``); the start (Ray, the workers, the model loads) is given apart.
The model is the full-size htdemucs architecture with random weights (the
same compute as the real one, built from ``../shared/models/htdemucs_kwargs.json``)
unless ``--model`` names another (e.g. ``dsp``, or a real checkpoint).

    python3 benchmarks/ray_batch.py                 # 20 songs, full-size htdemucs
    python3 benchmarks/ray_batch.py --songs 4 --model dsp
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"
SONGS = SHARED / "eval" / "musdb18-7-test"


def timed_batch(argv: list[str]) -> tuple[float, float, int]:
    """Run ``daw-bridge batch argv``; (start seconds, songs seconds, exit status)."""
    from daw_bridge import cli

    began = time.perf_counter()
    ready: list[float] = []
    prepare = cli.prepare_split

    def marked(*args, **kwargs):
        setup = prepare(*args, **kwargs)
        ready.append(time.perf_counter())  # workers up, models loaded: songs start now
        return setup

    cli.prepare_split = marked
    try:
        status = cli.main(["batch", *argv])
    finally:
        cli.prepare_split = prepare
    ended = time.perf_counter()
    return ready[0] - began, ended - ready[0], status


def warm_up(model: str) -> None:
    """Export the network to the backend's cache once, before any run is timed."""
    import numpy as np

    from daw_bridge.models.loader import load_separator

    load_separator(model, device="cpu").separate(np.zeros((2, 44100), np.float32))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=20)
    parser.add_argument("--model", help="default: full-size htdemucs, random weights")
    options = parser.parse_args()
    from throughput import random_checkpoint  # this script's folder is on sys.path

    cores = os.cpu_count() or 1
    songs = sorted(SONGS.glob("*/mixture.flac"))[: options.songs]
    with tempfile.TemporaryDirectory(prefix="ray-batch-") as work:
        work_dir = Path(work)
        # The backend's exported network goes to a cache of this run (workers inherit it).
        os.environ["DAW_BRIDGE_CACHE_DIR"] = str(work_dir / "cache")
        model = options.model or str(random_checkpoint(work_dir / "model"))
        warm_up(model)
        common = [*map(str, songs), "--model", model, "--device", "cpu", "-q"]
        runs = {
            "in-process": [],
            f"Ray, 1 worker x {cores} cores": [
                "--ray", "local", "--ray-workers", "1", "--ray-cpus-per-worker", str(cores),
            ],
            f"Ray, {cores} workers x 1 core": ["--ray", "local", "--ray-workers", str(cores)],
        }  # fmt: skip
        results = {}
        for label, extra in runs.items():
            out = work_dir / label.replace(" ", "_").replace(",", "")
            start, seconds, status = timed_batch([*common, "--out", str(out), *extra])
            if status != 0:
                raise SystemExit(f"{label}: the batch failed (exit {status})")
            results[label] = (start, seconds)
            print(f"{label}: start {start:.1f} s, songs {seconds:.1f} s", flush=True)

    base = results["in-process"][1] / len(songs)
    name = options.model or "full-size htdemucs (random weights)"
    print(f"\n{len(songs)} songs of 6.8 s, model {name}")
    print(f"CPU: {cpu_name()}, {cores} cores; Python {platform.python_version()}")
    print("\n| run | start | songs/min | s per song | vs in-process per song |")
    print("|---|---:|---:|---:|---:|")
    for label, (start, seconds) in results.items():
        per_song = seconds / len(songs)
        delta = "" if label == "in-process" else f"{per_song - base:+.2f} s"
        rate = 60 * len(songs) / seconds
        print(f"| {label} | {start:.1f} s | {rate:.1f} | {per_song:.2f} | {delta} |")


if __name__ == "__main__":
    main()
