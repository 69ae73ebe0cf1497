"""A second stage on the drums stem: its pieces (kick, snare, cymbals, toms with MSST's
``drumsep``) in a ``drums/`` folder beside the stems.

The pieces are the drum model's raw output plus ``rest``, the drums stem minus their
sum, so that nothing of the drums is lost: pieces plus rest add up to the drums stem
(as the kept stems plus rest add up to the mix with ``--keep``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daw_bridge.audio.io import SampleFormat, read_span, write_audio
from daw_bridge.errors import InvalidOptionError
from daw_bridge.separation.base import CancelCheck, ProgressCallback, Separator
from daw_bridge.separation.keep import REST_STEM
from daw_bridge.separation.pipeline import separate_span

DRUMS = "drums"


def check_drum_kit(stems: list[str] | tuple[str, ...], keep: list[str]) -> None:
    """A drum kit needs a drums stem that is delivered; refused before any inference."""
    if DRUMS not in stems:
        raise InvalidOptionError(
            "A drum-kit split works on the drums stem, and this model has none.",
            f"Use a model with drums (its stems: {', '.join(stems)}).",
        )
    if keep and DRUMS not in keep:
        raise InvalidOptionError(
            "A drum-kit split needs the drums stem, but --keep leaves it out.",
            "Add drums to --keep, or leave out the drum kit.",
        )


def split_drums(
    drums: Path,
    separator: Separator,
    folder: Path,
    sample_format: SampleFormat = "float32",
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, Path]:
    """The pieces of the ``drums`` stem file, written into ``folder``; their paths."""
    span = read_span(drums)
    pieces = separate_span(
        separator, span, sum_to_input=False, progress=progress, should_cancel=should_cancel
    )
    rest = span.samples - np.sum(list(pieces.values()), axis=0, dtype=np.float64)
    pieces[REST_STEM] = rest.astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: write_audio(folder / f"{name}.wav", samples, span.samplerate, sample_format)
        for name, samples in pieces.items()
    }
