"""Re-applying an effect preset to a finished job's 4 stems: in-process and via the server.

A 3-minute 44.1 kHz stereo song (the MUSDB18 previews in ../shared/eval joined
end to end, else the synthetic demo song) is split once by a real server with
the `dsp` separator; then every built-in preset is re-applied to that job's raw
stems with a real `apply` request, timed from the request to the final event
(what a REAPER click waits for), and in-process with `apply_preset` alone.
The target is at most 2 s per re-apply on the 2-core CPU.

    python benchmarks/preset_reapply.py               # 180 s song, median of 3 runs
    python benchmarks/preset_reapply.py --seconds 60 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"
TARGET_SECONDS = 2.0


def _song(folder: Path, seconds: float) -> Path:
    from daw_bridge.audio.io import read_span, write_audio
    from daw_bridge.demo import synthetic_song

    frames = int(seconds * 44100)
    parts, total = [], 0
    for song in sorted((SHARED / "eval" / "musdb18-7-test").glob("*/mixture.flac")):
        parts.append(read_span(song).samples)
        total += parts[-1].shape[1]
        if total >= frames:
            break
    audio = np.concatenate(parts, axis=1) if total >= frames else synthetic_song(seconds)[0]
    return write_audio(folder / "song.wav", audio[:, :frames], 44100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="song length (default 180)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per preset (median)")
    args = parser.parse_args()

    from daw_bridge.client.client import Client
    from daw_bridge.presets import library
    from daw_bridge.presets.apply import apply_preset
    from tests.conftest import ServerProcess

    names = [entry.name for entry in library.available() if entry.origin == "built-in"]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        song = _song(root, args.seconds)
        server = ServerProcess(Path("dsp"), root / "state")  # its own state, cache, presets
        try:
            with Client(server.address, timeout=120) as client:
                started = time.perf_counter()
                split = client.wait(client.submit(song, root / "stems"))
                if split["state"] != "done":
                    raise SystemExit(f"the split failed: {split['error']}")
                print(
                    f"{args.seconds:.0f} s song split into {len(split['result']['stems'])} stems "
                    f"with dsp in {time.perf_counter() - started:.1f} s (job {split['job']})"
                )
                stems = {name: Path(p) for name, p in split["result"]["stems"].items()}
                rows = []
                for name in names:
                    preset = library.load(name)
                    local, remote = [], []
                    for run in range(args.repeats):
                        started = time.perf_counter()
                        apply_preset(preset, stems, root / "local" / f"{name}-{run}")
                        local.append(time.perf_counter() - started)
                        started = time.perf_counter()
                        final = client.wait(client.apply(split["job"], name))
                        remote.append(time.perf_counter() - started)
                        if final["state"] != "done":
                            raise SystemExit(f"{name} failed: {final['error']}")
                    rows.append((name, statistics.median(local), statistics.median(remote)))
        finally:
            server.kill()
    print(f"\n| preset | in-process | via the server (request to done) | <= {TARGET_SECONDS:g} s |")
    print("|---|---:|---:|:-:|")
    for name, local, remote in rows:
        verdict = "yes" if remote <= TARGET_SECONDS else "NO"
        print(f"| `{name}` | {local:.2f} s | {remote:.2f} s | {verdict} |")
    print(f"\nmedian of {args.repeats} runs each, {os.cpu_count()} CPU cores")
    return 0 if all(remote <= TARGET_SECONDS for _, _, remote in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
