"""Click-to-stems latency: the warm daw-bridge server against a cold demucs run.

Existing REAPER stem scripts start ``python -m demucs`` per click; daw-bridge
keeps the model loaded. Both run here on the same checkpoint (the full-size
htdemucs architecture with random weights, same compute as the real one, built
from ``../shared/models/htdemucs_kwargs.json``), the same clips and the same
machine, in one run, so the ratios are fair.

    python benchmarks/latency.py            # 10 s and 60 s clips, 3 client starts
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"


def _checkpoint(folder: Path) -> Path:
    import torch
    from demucs.htdemucs import HTDemucs

    from tests.conftest import save_checkpoint

    spec = json.loads((SHARED / "models" / "htdemucs_kwargs.json").read_text())
    torch.manual_seed(0)
    model = HTDemucs(**spec["kwargs"], segment=Fraction(*spec["segment_fraction"]))
    return save_checkpoint(model, folder, "randomhtdemucs", half=True)


def _clip(folder: Path, seconds: float) -> Path:
    from daw_bridge.audio.io import read_span, write_audio
    from daw_bridge.demo import synthetic_song

    songs = sorted((SHARED / "eval" / "musdb18-7-test").glob("*/mixture.flac"))
    parts, total = [], 0
    for song in songs:
        parts.append(read_span(song).samples)
        total += parts[-1].shape[1]
        if total >= seconds * 44100:
            break
    audio = np.concatenate(parts, axis=1) if parts else synthetic_song(seconds)[0]
    audio = audio[:, : int(seconds * 44100)]
    return write_audio(folder / f"clip{int(seconds)}s.wav", audio, 44100)


def _timed(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - started


def main() -> int:
    from daw_bridge.client.client import Client

    work = Path(tempfile.mkdtemp(prefix="daw-bridge-latency-"))
    checkpoint = _checkpoint(work / "models")
    clips = {seconds: _clip(work, seconds) for seconds in (10, 60)}
    env = {**os.environ, "DAW_BRIDGE_STATE_DIR": str(work / "state")}
    address = "tcp://127.0.0.1:5899"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daw_bridge",
            "serve",
            "--bind",
            address,
            "--model",
            str(checkpoint),
            "--device",
            "cpu",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        with Client(address, timeout=120) as client:
            client.hello()
            for seconds, clip in clips.items():
                started = time.perf_counter()
                final = client.wait(client.submit(clip, work / f"ours{seconds}"))
                warm = time.perf_counter() - started
                assert final["state"] == "done", final
                started = time.perf_counter()
                again = client.wait(client.submit(clip, work / f"hit{seconds}"))
                hit = time.perf_counter() - started
                assert again["result"]["cached"]
                cold = _timed(
                    [sys.executable, "-m", "demucs", "--repo", str(checkpoint.parent), "-n",
                     "randomhtdemucs", "-o", str(work / "demucs"), str(clip)]
                )  # fmt: skip
                rows.append((seconds, warm, cold, hit))
        starts = [
            _timed([sys.executable, "-m", "daw_bridge", "client", "--server", address, "status"])
            for _ in range(5)
        ]
    finally:
        subprocess.run(
            [sys.executable, "-m", "daw_bridge", "client", "--server", address, "shutdown"],
            capture_output=True,
        )
        server.wait(30)
    print(f"Full-size htdemucs (random weights), CPU, {os.cpu_count()} cores\n")
    print(
        "| clip | warm server: submit to stems | cold `python -m demucs` | speed-up | cache hit |"
    )
    print("|---|---:|---:|---:|---:|")
    for seconds, warm, cold, hit in rows:
        ratio = cold / warm
        print(f"| {seconds} s | {warm:.2f} s | {cold:.2f} s | {ratio:.2f}x | {1000 * hit:.0f} ms |")
    print(
        f"\nClient start to reply (`daw-bridge client status`, a new process each time): "
        f"median {1000 * statistics.median(starts):.0f} ms over {len(starts)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
