"""Click-to-stems latency: the warm daw-bridge server against a cold demucs run.

Existing REAPER stem scripts start ``python -m demucs`` per click; daw-bridge
keeps the model loaded. Both run here on the same checkpoint (the full-size
htdemucs architecture with random weights, same compute as the real one, built
from ``../shared/models/htdemucs_kwargs.json``), the same clips and the same
machine, in one run, so the ratios are fair. Each round uses a different
clip of the same length (the server would otherwise answer from its stem
cache) and runs ours, the cache hit and the cold run one after the other; we
report medians over the rounds, as this shared machine is noisy.

    python benchmarks/latency.py            # 10 s and 60 s clips, 3 rounds
    python benchmarks/latency.py --rounds 1
    python benchmarks/latency.py --device cuda --half   # a GPU server (fp16)
    python benchmarks/latency.py --no-cold              # ours only (no demucs command line)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"


def _clip(folder: Path, seconds: float, first_song: int = 0) -> Path:
    from daw_bridge.audio.io import read_span, write_audio
    from daw_bridge.demo import synthetic_song

    songs = sorted((SHARED / "eval" / "musdb18-7-test").glob("*/mixture.flac"))
    parts, total = [], 0
    for song in songs[first_song:] + songs[:first_song]:
        parts.append(read_span(song).samples)
        total += parts[-1].shape[1]
        if total >= seconds * 44100:
            break
    audio = np.concatenate(parts, axis=1) if parts else synthetic_song(seconds)[0]
    audio = audio[:, : int(seconds * 44100)]
    return write_audio(folder / f"clip{int(seconds)}s-{first_song}.wav", audio, 44100)


def _timed(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - started


def main() -> int:
    import argparse

    import torch
    from throughput import device_name, random_checkpoint  # this script's folder is on sys.path

    from daw_bridge.client.client import Client

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="the server's --device")
    parser.add_argument("--half", action="store_true", help="the server's --half")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold demucs runs")
    parser.add_argument("--clips", default="10,60", help="clip lengths in seconds")
    args = parser.parse_args()
    rounds = args.rounds
    work = Path(tempfile.mkdtemp(prefix="daw-bridge-latency-"))
    checkpoint = random_checkpoint(work / "models")
    # A different stretch of music per round and length (10 songs apart), so no cache hits.
    lengths = [int(s) for s in args.clips.split(",")]
    clips = {s: [_clip(work, s, 10 * r) for r in range(rounds)] for s in lengths}
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
            args.device,
            *(["--half"] if args.half else []),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        with Client(address, timeout=120) as client:
            client.hello()
            for seconds, round_clips in clips.items():
                warms, colds, hits = [], [], []
                for clip in round_clips:
                    started = time.perf_counter()
                    final = client.wait(client.submit(clip, work / f"ours-{clip.stem}"))
                    warms.append(time.perf_counter() - started)
                    assert final["state"] == "done", final
                    assert not final["result"]["cached"], "each round needs a fresh clip"
                    started = time.perf_counter()
                    again = client.wait(client.submit(clip, work / f"hit-{clip.stem}"))
                    hits.append(time.perf_counter() - started)
                    assert again["result"]["cached"]
                    if not args.no_cold:
                        colds.append(_timed(
                            [sys.executable, "-m", "demucs", "--repo", str(checkpoint.parent), "-n",
                             "randomhtdemucs", "-d", args.device, "-o", str(work / "demucs"),
                             str(clip)]
                        ))  # fmt: skip
                    cold = f"{colds[-1]:.2f} s" if colds else "not run"
                    print(f"{clip.name}: ours {warms[-1]:.2f} s, cold demucs {cold}")
                median = statistics.median
                rows.append(
                    (seconds, median(warms), median(colds) if colds else None, median(hits))
                )
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
    print(
        f"\nFull-size htdemucs (random weights), {device_name(torch.device(args.device))}"
        f"{' fp16' if args.half else ''}, "
        f"{len(os.sched_getaffinity(0))} cores, "
        f"backend {os.environ.get('DAW_BRIDGE_BACKEND', 'auto')}, medians of {rounds} rounds\n"
    )
    print(
        "| clip | warm server: submit to stems | cold `python -m demucs` | speed-up | cache hit |"
    )
    print("|---|---:|---:|---:|---:|")
    for seconds, warm, cold, hit in rows:
        versus = f"{cold:.2f} s | {cold / warm:.2f}x" if cold else "not run | -"
        print(f"| {seconds} s | {warm:.2f} s | {versus} | {1000 * hit:.0f} ms |")
    print(
        f"\nClient start to reply (`daw-bridge client status`, a new process each time): "
        f"median {1000 * statistics.median(starts):.0f} ms over {len(starts)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
