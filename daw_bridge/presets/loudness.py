"""Integrated loudness (ITU-R BS.1770-4, LUFS), measured block by block.

Streaming keeps memory bounded for long stems: only one mean square per
100 ms is kept; the gated 400 ms blocks are formed from those at the end.
K-weighting uses the standard's two filter stages, designed for any sample
rate as libebur128 does (its coefficients at 48 kHz are the standard's).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import sosfilt

_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0


def _k_weighting(rate: int) -> np.ndarray:
    """The two K-weighting biquads for ``rate`` (libebur128's design; exact at 48 kHz)."""
    k = math.tan(math.pi * 1681.974450955533 / rate)
    q = 0.7071752369554196
    vh = 10 ** (3.999843853973347 / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    shelf += [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    k = math.tan(math.pi * 38.13547087602444 / rate)
    q = 0.5003270373238773
    a0 = 1 + k / q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, high_pass])


class LoudnessMeter:
    """Feed ``(channels, frames)`` blocks with :meth:`add`; read :meth:`integrated`."""

    def __init__(self, samplerate: int, channels: int) -> None:
        self.sos = _k_weighting(samplerate)
        self.state = np.zeros((2, channels, 2))  # per biquad, per channel
        self.step = max(1, round(0.1 * samplerate))
        self.partial = np.zeros(channels)  # sum of squares of the unfinished 100 ms step
        self.partial_frames = 0
        self.steps: list[np.ndarray] = []  # per channel mean square of each 100 ms

    def add(self, block: np.ndarray) -> None:
        weighted, self.state = sosfilt(self.sos, block.astype(np.float64), axis=-1, zi=self.state)
        squares = np.square(weighted, out=weighted)
        position = 0
        while position < squares.shape[1]:
            take = min(self.step - self.partial_frames, squares.shape[1] - position)
            self.partial += squares[:, position : position + take].sum(axis=1)
            self.partial_frames += take
            position += take
            if self.partial_frames == self.step:
                self.steps.append(self.partial / self.step)
                self.partial = np.zeros_like(self.partial)
                self.partial_frames = 0

    def integrated(self) -> float:
        """Gated loudness in LUFS; ``-inf`` for silence or less than 400 ms of audio."""
        if len(self.steps) < 4:
            return -math.inf
        steps = np.array(self.steps)  # (n, channels)
        blocks = (steps[:-3] + steps[1:-2] + steps[2:-1] + steps[3:]) / 4  # 400 ms, 75% overlap
        power = blocks.sum(axis=1)  # channel weights are 1 for left, right and mono
        with np.errstate(divide="ignore"):
            loudness = -0.691 + 10 * np.log10(power)
        kept = power[loudness > _ABSOLUTE_GATE]
        if kept.size == 0:
            return -math.inf
        relative = -0.691 + 10 * math.log10(kept.mean()) + _RELATIVE_GATE
        kept = kept[-0.691 + 10 * np.log10(kept) > relative]
        return -0.691 + 10 * math.log10(kept.mean())
