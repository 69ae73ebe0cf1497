"""Stem-to-MIDI accuracy on real songs, against MIDI derived from the true stems.

MUSDB18 has no MIDI, so the reference is our own transcription of the true
drums and bass stems; the estimate is the transcription of the stems a
separator made from the mix. This measures what separation costs the MIDI,
with mir_eval: onset F-measure (50 ms) for drums, note F-measure (50 ms
onsets, offsets ignored) for bass.

    python benchmarks/midi_accuracy.py --songs 10 --model dsp
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import mir_eval
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from eval_songs import DEFAULT_SONGS, iter_songs  # noqa: E402


def _hz(pitch: int) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def _note_f(reference, estimate) -> float:
    if not reference or not estimate:
        return float(reference == estimate)
    ref_i = np.array([[n.start, n.end] for n in reference])
    est_i = np.array([[n.start, n.end] for n in estimate])
    ref_p = np.array([_hz(n.pitch) for n in reference])
    est_p = np.array([_hz(n.pitch) for n in estimate])
    return mir_eval.transcription.precision_recall_f1_overlap(
        ref_i, ref_p, est_i, est_p, onset_tolerance=0.05, offset_ratio=None
    )[2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--songs", type=int, default=10)
    parser.add_argument("--model", default="dsp")
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()
    if not DEFAULT_SONGS.is_dir():
        print(f"No evaluation songs at {DEFAULT_SONGS}: nothing to measure.")
        return 0
    from daw_bridge.midi.drums import drum_hits
    from daw_bridge.midi.melody import melody_notes
    from daw_bridge.models.loader import load_separator

    separator = load_separator(args.model, model_dir=args.model_dir)
    drums_f, bass_f = [], []
    for index, (_name, mix, truth) in enumerate(iter_songs(DEFAULT_SONGS)):
        if index == args.songs:
            break
        stems = dict(zip(separator.sources, separator.separate(mix), strict=True))
        ref = np.unique([round(n.start, 3) for n in drum_hits(truth["drums"], 44100)])
        est = np.unique([round(n.start, 3) for n in drum_hits(stems["drums"], 44100)])
        drums_f.append(mir_eval.onset.f_measure(ref, est, window=0.05)[0])
        bass_f.append(
            _note_f(
                melody_notes(truth["bass"], 44100, "bass"),
                melody_notes(stems["bass"], 44100, "bass"),
            )
        )
    print(f"{len(drums_f)} songs, stems by '{args.model}', reference = MIDI of the true stems")
    print(f"drum onset F (50 ms): median {statistics.median(drums_f):.2f}")
    print(f"bass note F (50 ms onsets): median {statistics.median(bass_f):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
