"""The contract every separator (neural or DSP) fulfils.

Separators work on float32 arrays shaped ``(channels, samples)`` at their own
``samplerate`` and return ``(sources, channels, samples)`` with the same channel
count and length. Resampling, file I/O and the sum-to-input residual live in the
pipeline, so a separator only separates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

#: Called with the fraction of the work done, from 0.0 to 1.0.
ProgressCallback = Callable[[float], None]
#: Polled between units of work; returning True aborts with CancelledError.
CancelCheck = Callable[[], bool]


class Separator(Protocol):
    name: str
    sources: tuple[str, ...]
    samplerate: int

    def separate(
        self,
        mix: np.ndarray,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> np.ndarray:
        """Split ``mix`` (channels, samples) into (sources, channels, samples)."""
        ...
