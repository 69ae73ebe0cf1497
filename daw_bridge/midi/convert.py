"""One entry point from a stem's samples to a MIDI file, by kind of stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daw_bridge.errors import InvalidOptionError
from daw_bridge.midi.drums import drum_hits
from daw_bridge.midi.melody import melody_notes
from daw_bridge.midi.notes import Note, write_midi

KINDS = ("drums", "bass", "vocals")


def stem_to_midi(
    samples: np.ndarray,
    samplerate: int,
    kind: str,
    out: Path,
    min_note: float = 0.08,
    overwrite: bool = False,
    pitch_bend: bool = False,
) -> list[Note]:
    """Write ``out`` (an empty MIDI file for silence) and return its notes."""
    if kind not in KINDS:
        raise InvalidOptionError(f"Unknown stem kind {kind!r}.", f"Use one of {', '.join(KINDS)}.")
    if kind == "drums":
        notes = drum_hits(samples, samplerate)
    else:
        notes = melody_notes(samples, samplerate, kind, min_note, pitch_bend)
    write_midi(out, notes, drums=kind == "drums", name=kind, overwrite=overwrite)
    return notes
