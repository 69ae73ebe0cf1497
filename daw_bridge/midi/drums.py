"""Drum hits from a drums stem: onsets, classified by where their energy lies.

A kick's energy sits below ~150 Hz, a hi-hat's above ~5 kHz, a snare's in
between with a noisy body; the band that dominates the 50 ms after an onset
names the drum. Velocity follows the onset strength.
"""

from __future__ import annotations

import librosa
import numpy as np

from daw_bridge.midi.notes import Note

KICK, SNARE, CLOSED_HIHAT = 36, 38, 42  # General MIDI drum notes
_HOP = 256
_HIT_SECONDS = 0.05
_NOTE_SECONDS = 0.1
_SILENCE = 1e-4  # RMS below this (-80 dBFS) is silence


def drum_hits(audio: np.ndarray, samplerate: int) -> list[Note]:
    mono = np.asarray(audio, dtype=np.float32).mean(axis=0)
    if mono.size < 2048 or np.sqrt(np.mean(mono**2)) < _SILENCE:
        return []
    strength = librosa.onset.onset_strength(y=mono, sr=samplerate, hop_length=_HOP)
    onsets = librosa.onset.onset_detect(
        onset_envelope=strength, sr=samplerate, hop_length=_HOP, backtrack=True, units="samples"
    )
    if len(onsets) == 0:
        return []
    peak = float(strength.max()) or 1.0
    frames = librosa.samples_to_frames(onsets, hop_length=_HOP)
    spectrum_size = 2048
    freqs = np.fft.rfftfreq(spectrum_size, 1 / samplerate)
    bands = {KICK: freqs < 150, SNARE: (freqs >= 150) & (freqs < 5000), CLOSED_HIHAT: freqs >= 5000}
    window = np.hanning(spectrum_size)
    notes = []
    for onset, frame in zip(onsets, frames, strict=True):
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
        local = strength[frame : frame + 3].max() if frame < len(strength) else strength[-1]
        velocity = int(np.clip(40 + 87 * local / peak, 1, 127))
        start = onset / samplerate
        primary = max(energy, key=energy.get)
        for drum in sorted(energy):
            if drum == primary or energy[drum] / total > 0.25:
                notes.append(Note(start, start + _NOTE_SECONDS, drum, velocity))
    return notes
