"""Score a stem separator on real multitrack songs with known stems.

The evaluation folder holds one sub-folder per song with ``mixture.flac`` and
one FLAC per stem (``drums``, ``bass``, ``other``, ``vocals``), 44.1 kHz stereo.
The audio is research-licensed: read it from where it lies, never copy it into
the repository.

``benchmarks/quality.py`` uses :func:`iter_songs` and :func:`score_separator`
to score every separator it finds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

STEMS = ("drums", "bass", "other", "vocals")
SAMPLERATE = 44100
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SONGS = REPO_ROOT.parent / "shared" / "eval" / "musdb18-7-test"

#: ``(name, mixture, {stem: reference})``; arrays are float32 ``(2, samples)``.
Song = tuple[str, np.ndarray, dict[str, np.ndarray]]
#: Takes a float32 ``(2, samples)`` mix at 44100 Hz, returns ``{stem: estimate}``.
SeparateFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def read_audio(path: Path) -> np.ndarray:
    """As daw-bridge reads its input: libsndfile, 16-bit FLAC as x / 32768."""
    import soundfile

    interleaved, samplerate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if samplerate != SAMPLERATE:
        raise ValueError(f"{path}: {samplerate} Hz, expected {SAMPLERATE} Hz")
    audio = interleaved.T
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    return np.ascontiguousarray(audio, dtype=np.float32)


def iter_songs(root: Path, stems: tuple[str, ...] = STEMS) -> Iterator[Song]:
    """Yield ``(name, mixture, {stem: reference})`` for each song folder under ``root``.

    Songs are sorted by name. All arrays of a song are trimmed to the shortest one,
    so mixture and references always have the same shape.
    """
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if not (folder / "mixture.flac").is_file():
            continue
        mixture = read_audio(folder / "mixture.flac")
        refs = {stem: read_audio(folder / f"{stem}.flac") for stem in stems}
        n = min([mixture.shape[1], *(r.shape[1] for r in refs.values())])
        yield folder.name, mixture[:, :n], {stem: r[:, :n] for stem, r in refs.items()}


def score_separator(
    separate_fn: SeparateFn, songs: Iterable[Song], stems: tuple[str, ...] = STEMS
) -> dict[str, list[float]]:
    """Per-song SDR (dB) of ``separate_fn`` and of the constant-gain baseline.

    Returns ``{stem: [sdr per song], f"{stem}_baseline": [baseline sdr per song]}``
    for every stem in ``stems``, lists in the order of ``songs``. The baseline is
    :func:`daw_bridge.separation.metrics.best_constant_gain_sdr`, i.e. the mixture at
    the best single gain: a separator that does not beat it separates nothing.
    """
    from daw_bridge.separation.metrics import best_constant_gain_sdr, sdr

    scores: dict[str, list[float]] = {}
    for key in (*stems, *(f"{s}_baseline" for s in stems)):
        scores[key] = []
    for _name, mixture, refs in songs:
        estimates = separate_fn(mixture)
        for stem in stems:
            scores[stem].append(sdr(refs[stem], estimates[stem]))
            scores[f"{stem}_baseline"].append(best_constant_gain_sdr(refs[stem], mixture))
    return scores


def markdown_table(scores: dict[str, list[float]], label: str = "DSP") -> str:
    """Median SDR per stem next to the baseline median, as a markdown table."""
    lines = [
        f"| stem | {label} median SDR (dB) | baseline median SDR (dB) |",
        "|---|---:|---:|",
    ]
    for stem in STEMS:
        if scores.get(stem):
            ours = statistics.median(scores[stem])
            base = statistics.median(scores[f"{stem}_baseline"])
            lines.append(f"| {stem} | {ours:.2f} | {base:.2f} |")
    return "\n".join(lines)
