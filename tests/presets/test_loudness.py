"""The BS.1770 loudness meter against the standard's reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daw_bridge.presets.loudness import LoudnessMeter


def sine(samplerate: int, seconds: float, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * samplerate)) / samplerate
    return (amplitude * np.sin(2 * np.pi * 997 * t)).astype(np.float32)


@pytest.mark.parametrize("samplerate", [44100, 48000, 96000])
def test_a_full_scale_997_hz_sine_in_one_channel_reads_minus_3_01_lufs(samplerate):
    meter = LoudnessMeter(samplerate, 1)
    meter.add(sine(samplerate, 5.0)[None])
    assert meter.integrated() == pytest.approx(-3.01, abs=0.02)


def test_blocks_of_any_size_give_the_same_reading_as_the_whole():
    rng = np.random.default_rng(3)
    signal = (rng.standard_normal((2, 44100 * 4)) * np.linspace(0.01, 0.5, 44100 * 4)).astype(
        np.float32
    )
    whole = LoudnessMeter(44100, 2)
    whole.add(signal)
    pieces = LoudnessMeter(44100, 2)
    for start in range(0, signal.shape[1], 3001):
        pieces.add(signal[:, start : start + 3001])
    assert pieces.integrated() == pytest.approx(whole.integrated(), abs=1e-9)


def test_gating_ignores_silence_and_silence_alone_is_minus_infinity():
    tone = sine(48000, 3.0, 0.1)
    with_silence = np.concatenate([tone, np.zeros(48000 * 10, np.float32)])
    a, b = LoudnessMeter(48000, 1), LoudnessMeter(48000, 1)
    a.add(tone[None])
    b.add(with_silence[None])
    # Ungated, 10 s of silence would pull 3 s of tone down by 6.4 dB; the gates keep
    # only the blocks around the tone's end, which straddle it.
    assert b.integrated() == pytest.approx(a.integrated(), abs=0.3)
    quiet = LoudnessMeter(48000, 2)
    quiet.add(np.zeros((2, 48000), np.float32))
    assert quiet.integrated() == -math.inf
