"""One entry point from a stem's samples to a MIDI file, by kind of stem."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from daw_bridge.errors import InvalidOptionError
from daw_bridge.midi.drums import PIECE_NOTES, drum_hits, kit_hits
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


def check_kinds(kinds: list[str], stems: list[str] | None = None) -> None:
    """Refuse MIDI for stems that cannot be transcribed (or were not made)."""
    allowed = [k for k in KINDS if stems is None or k in stems]
    unknown = [kind for kind in kinds if kind not in allowed]
    if unknown:
        raise InvalidOptionError(
            f"MIDI was asked for {', '.join(map(repr, unknown))}, which cannot be transcribed "
            "from this split.",
            f"Use some of: {', '.join(allowed)}.",
        )


def uses_pieces(pieces: Mapping[str, Path] | None) -> bool:
    """Whether a drum-kit split gave the pieces that drums MIDI then reads: kick and snare."""
    return bool(pieces) and all(piece in pieces for piece in ("kick", "snare"))


def midi_for_stems(
    stems: dict[str, Path],
    kinds: list[str],
    overwrite: bool = False,
    pieces: Mapping[str, Path] | None = None,
) -> dict[str, Path]:
    """``<stem>.mid`` next to each stem WAV named in ``kinds``.

    With a drum-kit split's ``pieces`` (kick and snare at least), drums MIDI takes each
    drum's hits from its own piece instead of guessing them from the mixed drums stem.
    """
    from daw_bridge.audio.io import read_span

    check_kinds(kinds, list(stems))
    written = {}
    for kind in kinds:
        span = read_span(stems[kind])
        written[kind] = Path(stems[kind]).with_suffix(".mid")
        if kind == "drums" and pieces is not None and uses_pieces(pieces):
            # The pieces are the drums stem split at its own rate: one samplerate for all.
            audio = {
                name: read_span(pieces[name]).samples for name in PIECE_NOTES if name in pieces
            }
            notes = kit_hits(audio, span.samplerate, span.samples)
            write_midi(written[kind], notes, drums=True, name=kind, overwrite=overwrite)
        else:
            stem_to_midi(span.samples, span.samplerate, kind, written[kind], overwrite=overwrite)
    return written
