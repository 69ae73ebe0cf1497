"""Resampling must not move the audio in time: stems are summed back later."""

from __future__ import annotations

import numpy as np
import pytest

from daw_bridge.audio.resample import resample


@pytest.mark.parametrize(("source", "target"), [(48000, 44100), (8000, 44100), (192000, 44100)])
def test_round_trip_is_aligned_and_clean(source, target):
    t = np.arange(source) / source
    tone = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 2500 * t)]).astype(np.float32)
    there = resample(tone, source, target)
    back = resample(there, target, source, length=source)
    assert back.shape == tone.shape and back.dtype == np.float32
    middle = slice(source // 10, -source // 10)
    error = np.max(np.abs(back[:, middle] - tone[:, middle]))
    assert 20 * np.log10(error) < -60  # a 0.1-sample shift alone would give about -36 dB


def test_same_rate_is_untouched():
    x = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 44100, 44100), x)


@pytest.mark.parametrize("length", [99, 100, 101])
def test_exact_length_on_request(length):
    x = np.ones((1, 100), dtype=np.float32)
    assert resample(x, 44100, 44100, length=length).shape == (1, length)
