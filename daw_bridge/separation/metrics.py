"""Separation quality measures used by tests and benchmarks.

SDR here is the plain signal-to-distortion ratio used by the MDX challenges and
the Demucs v4 paper ("new SDR", no allowed distortion filter):
``10 * log10(sum(s**2) / sum((s - s_hat)**2))`` over the whole excerpt and all
channels. It is stricter than BSSEval v4 SDR and needs no extra package.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-distortion ratio in dB of ``estimate`` against ``reference``."""
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {estimate.shape}")
    signal = np.sum(reference**2)
    distortion = np.sum((reference - estimate) ** 2)
    return float(10.0 * np.log10((signal + _EPS) / (distortion + _EPS)))


def best_constant_gain_sdr(reference: np.ndarray, mixture: np.ndarray) -> float:
    """SDR of ``g * mixture`` with the one gain ``g`` that minimises the error.

    This is the baseline any separator must beat: it knows the right level of
    the stem but separates nothing.
    """
    reference = np.asarray(reference, dtype=np.float64)
    mixture = np.asarray(mixture, dtype=np.float64)
    gain = float(np.sum(reference * mixture) / (np.sum(mixture**2) + _EPS))
    return sdr(reference, gain * mixture)
