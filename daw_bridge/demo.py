"""A synthetic song with known stems, for the quick-start demo and the tests.

Four parts a producer would recognise, each in its own register and stereo
place, so that a separator can be scored against the exact ground truth:
a kick/snare/hi-hat pattern, a bass line, a centre-panned voice-like tone with
vibrato and formants, and a wide pad.
"""

from __future__ import annotations

import numpy as np

SOURCES = ("drums", "bass", "other", "vocals")


def _envelope(n: int, attack: int, decay: float, samplerate: int) -> np.ndarray:
    t = np.arange(n) / samplerate
    env = np.exp(-t / decay)
    env[:attack] *= np.linspace(0.0, 1.0, attack)
    return env


def _drums(n: int, sr: int, bpm: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    beat = round(60.0 / bpm * sr)
    kick_len, snare_len, hat_len = int(0.25 * sr), int(0.2 * sr), int(0.05 * sr)
    t_kick = np.arange(kick_len) / sr
    # Pitch sweeping down from 150 Hz to 50 Hz: the classic synthetic kick.
    kick = np.sin(2 * np.pi * (50 * t_kick + 100 * 0.03 * (1 - np.exp(-t_kick / 0.03))))
    kick *= _envelope(kick_len, 20, 0.08, sr)
    snare = rng.standard_normal(snare_len) * _envelope(snare_len, 10, 0.05, sr)
    snare += (
        0.5
        * np.sin(2 * np.pi * 190 * np.arange(snare_len) / sr)
        * _envelope(snare_len, 10, 0.04, sr)
    )
    hat = np.diff(rng.standard_normal(hat_len + 1)) * _envelope(hat_len, 5, 0.012, sr)
    for i, start in enumerate(range(0, n, beat)):
        if i % 2 == 0:
            out[start : start + kick_len] += kick[: n - start]
        else:
            out[start : start + snare_len] += 0.6 * snare[: n - start]
        for half in (0, beat // 2):
            s = start + half
            if s < n:
                out[s : s + hat_len] += 0.3 * hat[: n - s]
    return out


def _bass(n: int, sr: int, bpm: float) -> np.ndarray:
    notes = [41.2, 41.2, 55.0, 49.0, 41.2, 61.7, 55.0, 49.0]  # E1 .. B1 in Hz
    step = round(60.0 / bpm * sr)
    out = np.zeros(n)
    for i, start in enumerate(range(0, n, step)):
        length = min(step, n - start)
        t = np.arange(length) / sr
        f = notes[i % len(notes)]
        tone = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(2 * np.pi * 2 * f * t)
        env = np.minimum(1.0, t / 0.01) * np.exp(-t / 0.6)
        out[start : start + length] = tone * env
    return out


def _voice(n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    melody = [220.0, 246.9, 261.6, 293.7, 261.6, 246.9]
    note_len = sr  # one note per second
    f0 = np.array([melody[(i // note_len) % len(melody)] for i in range(n)])
    f0 = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))  # vibrato
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(n)
    for k in range(1, 16):  # harmonics shaped by two formants
        fk = k * 240.0
        amp = np.exp(-(((fk - 700) / 300) ** 2)) + 0.6 * np.exp(-(((fk - 1200) / 400) ** 2))
        out += (amp + 0.05) / k**0.5 * np.sin(k * phase)
    gate = (np.arange(n) % note_len) < int(0.85 * note_len)
    return out * gate


def _pad(n: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n) / sr
    chord = [130.8, 164.8, 196.0, 329.6]
    left = sum(np.sin(2 * np.pi * f * 1.002 * t + i) for i, f in enumerate(chord))
    right = sum(np.sin(2 * np.pi * f * 0.998 * t + 2 * i) for i, f in enumerate(chord))
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)
    return left * swell, right * swell


def synthetic_song(
    seconds: float = 8.0, samplerate: int = 44100, seed: int = 0, bpm: float = 120.0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return ``(mix, stems)``: stereo float32 arrays (2, samples); mix == sum of stems."""
    rng = np.random.default_rng(seed)
    n = round(seconds * samplerate)
    drums = _drums(n, samplerate, bpm, rng)
    bass = _bass(n, samplerate, bpm)
    voice = _voice(n, samplerate)
    pad_l, pad_r = _pad(n, samplerate)
    stems = {
        "drums": np.stack([drums, 0.9 * drums]) * 0.3,
        "bass": np.stack([bass, bass]) * 0.22,
        "other": np.stack([pad_l, pad_r]) * 0.04,
        "vocals": np.stack([voice, voice]) * 0.08,
    }
    stems = {k: v.astype(np.float32) for k, v in stems.items()}
    mix = sum(stems.values()).astype(np.float32)
    return mix, stems
