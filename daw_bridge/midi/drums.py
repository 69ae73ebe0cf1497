"""Drum hits from a drums stem: onsets, classified by where their energy lies.

A kick's energy sits below ~150 Hz, a hi-hat's above ~5 kHz, a snare's in
between with a noisy body; the band that dominates the 50 ms after an onset
names the drum. Velocity follows the onset strength.

After a drum-kit split each piece is one drum already, so :func:`kit_hits` takes
every onset of the kick piece as a kick and of the snare piece as a snare: a
snare's low body or a kick's click can no longer be mistaken for the other.
"""

from __future__ import annotations

from collections.abc import Mapping

import librosa
import numpy as np

from daw_bridge.midi.notes import Note

KICK, SNARE, CLOSED_HIHAT, LOW_TOM = 36, 38, 42, 45  # General MIDI drum notes
#: Kit pieces (a drum-kit model's stems) and the note each one's hits become.
PIECE_NOTES = {"kick": KICK, "snare": SNARE, "toms": LOW_TOM, "cymbals": CLOSED_HIHAT}
#: Hits this far below a piece's loudest (-30 dB) are the other drums bleeding in.
_BLEED = 10 ** (-30 / 20)
_HOP = 256
_HIT_SECONDS = 0.05
_NOTE_SECONDS = 0.1
_SILENCE = 1e-4  # RMS below this (-80 dBFS) is silence


def _onsets(mono: np.ndarray, samplerate: int) -> tuple[np.ndarray, np.ndarray]:
    """Onset positions in samples (backtracked to where each hit starts) and the strength
    envelope they were found in; nothing for silence."""
    if mono.size < 2048 or np.sqrt(np.mean(mono**2)) < _SILENCE:
        return np.zeros(0, dtype=int), np.zeros(0)
    strength = librosa.onset.onset_strength(y=mono, sr=samplerate, hop_length=_HOP)
    onsets = librosa.onset.onset_detect(
        onset_envelope=strength, sr=samplerate, hop_length=_HOP, backtrack=True, units="samples"
    )
    return np.asarray(onsets, dtype=int), strength


def _velocity(strength: np.ndarray, onset: int, peak: float) -> int:
    frame = int(librosa.samples_to_frames(onset, hop_length=_HOP))
    local = strength[frame : frame + 3].max() if frame < len(strength) else strength[-1]
    return int(np.clip(40 + 87 * local / peak, 1, 127))


def drum_hits(audio: np.ndarray, samplerate: int) -> list[Note]:
    mono = np.asarray(audio, dtype=np.float32).mean(axis=0)
    onsets, strength = _onsets(mono, samplerate)
    if len(onsets) == 0:
        return []
    peak = float(strength.max()) or 1.0
    spectrum_size = 2048
    freqs = np.fft.rfftfreq(spectrum_size, 1 / samplerate)
    bands = {KICK: freqs < 150, SNARE: (freqs >= 150) & (freqs < 5000), CLOSED_HIHAT: freqs >= 5000}
    window = np.hanning(spectrum_size)
    notes = []
    for onset in onsets:
        hit = mono[onset : onset + int(_HIT_SECONDS * samplerate)]
        if hit.size < 64:
            continue
        spectrum = (
            np.abs(
                np.fft.rfft(
                    np.pad(hit, (0, max(0, spectrum_size - hit.size)))[:spectrum_size] * window
                )
            )
            ** 2
        )
        energy = {drum: float(spectrum[mask].sum()) for drum, mask in bands.items()}
        total = sum(energy.values()) or 1.0
        velocity = _velocity(strength, onset, peak)
        start = onset / samplerate
        primary = max(energy, key=energy.get)
        for drum in sorted(energy):
            if drum == primary or energy[drum] / total > 0.25:
                notes.append(Note(start, start + _NOTE_SECONDS, drum, velocity))
    return notes


def piece_hits(audio: np.ndarray, samplerate: int, pitch: int) -> list[Note]:
    """Every hit of one kit piece as ``pitch``; bleed from the other drums is left out."""
    mono = np.asarray(audio, dtype=np.float32).mean(axis=0)
    onsets, strength = _onsets(mono, samplerate)
    length = int(_HIT_SECONDS * samplerate)
    levels = [float(np.sqrt(np.mean(mono[o : o + length] ** 2))) for o in onsets]
    if not levels:
        return []
    loudest, peak = max(levels), float(strength.max()) or 1.0
    return [
        Note(
            onset / samplerate,
            onset / samplerate + _NOTE_SECONDS,
            pitch,
            _velocity(strength, onset, peak),
        )
        for onset, level in zip(onsets, levels, strict=True)
        if level >= _BLEED * loudest
    ]


def kit_hits(
    pieces: Mapping[str, np.ndarray], samplerate: int, drums: np.ndarray | None = None
) -> list[Note]:
    """Drum notes from a drum-kit split's pieces (``kick``, ``snare``, ``toms``,
    ``cymbals``), each from its own stem. Without a cymbals piece the hi-hats come from
    the drums stem as :func:`drum_hits` finds them (its kicks and snares are left out:
    the pieces give those)."""
    notes = [
        note
        for piece, pitch in PIECE_NOTES.items()
        if piece in pieces
        for note in piece_hits(pieces[piece], samplerate, pitch)
    ]
    if "cymbals" not in pieces and drums is not None:
        notes += [n for n in drum_hits(drums, samplerate) if n.pitch == CLOSED_HIHAT]
    return sorted(notes, key=lambda note: (note.start, note.pitch))
