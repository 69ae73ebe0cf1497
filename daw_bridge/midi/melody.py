"""A monophonic line (bass or lead vocal) to notes, with librosa's pYIN.

pYIN gives a pitch and a voicing decision per frame; runs of voiced frames on
the same semitone become notes, shorter ones than ``min_note`` are dropped.
The stem is first resampled to a rate that still holds the partials pYIN needs,
which makes it several times faster.
"""

from __future__ import annotations

import librosa
import numpy as np
import soxr

from daw_bridge.midi.notes import Note

RANGES = {"bass": (30.0, 400.0, 8000), "vocals": (70.0, 1100.0, 16000)}
_HOP_SECONDS = 0.01
_SILENCE = 1e-4


_BEND_STEP = 0.1  # semitones: finer changes are not sent


def _bends(f0: np.ndarray, first: int, last: int, pitch: float, frame_seconds: float):
    """Offsets from the note's pitch where they change by at least _BEND_STEP."""
    offsets = librosa.hz_to_midi(f0[first:last]) - pitch
    bends: list[tuple[float, float]] = []
    for index, offset in enumerate(offsets):
        if np.isfinite(offset) and (not bends or abs(offset - bends[-1][1]) >= _BEND_STEP):
            bends.append(((first + index) * frame_seconds, round(float(offset), 3)))
    return tuple(bends)


def melody_notes(
    audio: np.ndarray,
    samplerate: int,
    kind: str,
    min_note: float = 0.08,
    pitch_bend: bool = False,
) -> list[Note]:
    """Notes of the line; with ``pitch_bend``, each note follows its glides and vibrato."""
    fmin, fmax, rate = RANGES[kind]
    mono = np.asarray(audio, dtype=np.float32).mean(axis=0)
    if np.sqrt(np.mean(mono**2)) < _SILENCE:
        return []
    mono = soxr.resample(mono, samplerate, rate) if samplerate != rate else mono
    frame = 1024  # 128 ms at 8 kHz: four periods of the lowest bass note
    hop = int(_HOP_SECONDS * rate)
    if mono.size < frame:
        mono = np.pad(mono, (0, frame - mono.size))
    f0, voiced, _prob = librosa.pyin(
        mono, fmin=fmin, fmax=fmax, sr=rate, frame_length=frame, hop_length=hop
    )
    rms = librosa.feature.rms(y=mono, frame_length=frame, hop_length=hop)[0][: len(f0)]
    pitch = np.where(voiced, np.round(librosa.hz_to_midi(np.nan_to_num(f0, nan=1.0))), -1)
    notes: list[Note] = []
    loudest = float(rms.max()) or 1.0
    start = 0
    for i in range(1, len(pitch) + 1):
        if i < len(pitch) and pitch[i] == pitch[start]:
            continue
        if pitch[start] >= 0:
            begin, end = start * hop / rate, i * hop / rate
            if end - begin >= min_note:
                level = float(rms[start:i].mean()) / loudest
                velocity = int(np.clip(30 + 97 * level, 1, 127))
                bends = _bends(f0, start, i, pitch[start], hop / rate) if pitch_bend else ()
                notes.append(Note(begin, end, int(pitch[start]), velocity, bends))
        start = i
    return notes
