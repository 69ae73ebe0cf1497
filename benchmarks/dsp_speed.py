"""The ``dsp`` separator's speed against the same separator on librosa's HPSS.

The separator's harmonic masks are librosa's ``decompose.hpss`` masks; it now
computes their median filters itself, through scipy's 1-D filter (see
``daw_bridge.separation.dsp._Medians``). This runs both on the evaluation songs,
interleaved in one process, checks that their stems are identical bit for bit,
and prints the ratio.

    python benchmarks/dsp_speed.py               # the first 10 songs
    python benchmarks/dsp_speed.py --songs 50 --joined 4   # + one 4-song (27 s) clip
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


def librosa_harmonic_mask(medians, frames: int, bins: int, power: float):
    """The reference: librosa's HPSS on the same magnitudes (scipy's n-d median filter)."""
    import librosa

    harmonic, _ = librosa.decompose.hpss(
        medians._mag, kernel_size=(frames, bins), power=power, mask=True
    )
    return harmonic


def main() -> int:
    import numpy as np
    from eval_songs import DEFAULT_SONGS, iter_songs
    from msst_speed import cpu_description, load_average

    from daw_bridge.separation import dsp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=10)
    parser.add_argument("--joined", type=int, default=0, help="also one clip of this many songs")
    parser.add_argument("--song-dir", type=Path, default=DEFAULT_SONGS)
    args = parser.parse_args()
    songs = iter_songs(args.song_dir)
    mixes = [mix for _, (_, mix, _) in zip(range(args.songs), songs, strict=False)]
    if not mixes:
        print(f"no songs in {args.song_dir}", file=sys.stderr)
        return 1
    clips = [(f"{mix.shape[1] / dsp.SAMPLERATE:.1f} s song", mix) for mix in mixes]
    if args.joined:
        joined = np.concatenate(mixes[: args.joined], axis=1)
        clips.append((f"{joined.shape[1] / dsp.SAMPLERATE:.1f} s, {args.joined} songs", joined))
    ours = dsp._harmonic_mask
    separator = dsp.DspSeparator()
    separator.separate(mixes[0][:, : dsp.SAMPLERATE])  # imports and librosa's JIT, untimed

    def timed(mask_fn, mix):
        dsp._harmonic_mask = mask_fn
        try:
            started = time.perf_counter()
            stems = separator.separate(mix)
            return time.perf_counter() - started, stems
        finally:
            dsp._harmonic_mask = ours

    print(f"{cpu_description()}; {load_average()}\n")
    print("| clip | librosa's HPSS | ours | speed-up | stems identical |")
    print("|---|---:|---:|---:|---|")
    ratios, audio_s, ours_s, reference_s = [], 0.0, 0.0, 0.0
    for label, mix in clips:
        reference_time, reference = timed(librosa_harmonic_mask, mix)
        our_time, stems = timed(ours, mix)
        identical = bool(np.array_equal(stems, reference))
        ratios.append(reference_time / our_time)
        audio_s += mix.shape[1] / dsp.SAMPLERATE
        ours_s, reference_s = ours_s + our_time, reference_s + reference_time
        print(
            f"| {label} | {reference_time:.2f} s | {our_time:.2f} s | "
            f"{ratios[-1]:.2f}x | {'yes' if identical else '**no**'} |",
            flush=True,
        )
        if not identical:
            return 1
    print(
        f"\nMedian speed-up {statistics.median(ratios):.2f}x; in all, {audio_s:.0f} s of audio "
        f"in {reference_s:.1f} s (librosa's HPSS, {audio_s / reference_s:.1f}x real time) "
        f"against {ours_s:.1f} s (ours, {audio_s / ours_s:.1f}x real time)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
