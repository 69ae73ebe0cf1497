"""Chunked inference exactly as MSST's ``demix`` does it (generic mode), so our stems match
what MSST's own scripts produce from the same checkpoint.

MSST's scheme differs from demucs's ``apply_model`` (a triangular weight, no
padding), so it has its own overlap-add here:

- The mix is reflect-padded by ``border = chunk - step`` on both sides (only
  if it is longer than ``2 * border``), cut into chunks every
  ``step = chunk_size // num_overlap`` samples; a short last chunk is
  reflect-padded to full size if it is longer than half a chunk, else
  zero-padded.
- Each chunk's output is weighted by a window with a linear fade of
  ``chunk_size // 10`` samples at both ends, and the sum is divided by the
  summed weights (0/0 becomes 0, as MSST's ``nan_to_num``).
- Chunks go through the model ``batch_size`` at a time, and the fades are
  decided per batch: if a batch holds the last chunk, none of its chunks fades
  out; if a batch is the first chunk alone, it does not fade in. So the
  output depends on the batch size, exactly as in MSST: use the config's
  ``inference.batch_size`` to match it (the default here).

MSST's "demucs" mode (its ``htdemucs`` model type, the Demucs-family networks)
is simpler, and is ``Chunking(..., mode="demucs")`` here: the chunk is
``training.samplerate * training.segment`` samples, the mix is not padded, a
short last chunk is zero-padded, and the overlapping outputs are plainly
averaged (no fades, so the batch size does not change the result).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from daw_bridge.errors import CancelledError
from daw_bridge.separation.base import CancelCheck, ProgressCallback

#: MSST's two ways of cutting and re-joining a mix.
MODES = ("generic", "demucs")


@dataclass(frozen=True)
class Chunking:
    """How a mix is cut: chunk length, overlap count and batch size, in MSST's terms, and
    MSST's mode: ``"generic"`` (padding and fades) or ``"demucs"`` (plain averaging)."""

    chunk_size: int
    num_overlap: int
    batch_size: int
    mode: str = "generic"

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.batch_size < 1 or self.num_overlap < 1:
            raise ValueError(f"invalid chunking {self}")
        if self.mode not in MODES:
            raise ValueError(f"unknown chunking mode {self.mode!r}: one of {', '.join(MODES)}")
        if self.num_overlap > self.chunk_size:
            raise ValueError(f"num_overlap {self.num_overlap} exceeds chunk_size")

    @property
    def step(self) -> int:
        return self.chunk_size // self.num_overlap

    @property
    def border(self) -> int:
        """Reflect-padding on both sides of the mix (none in demucs mode)."""
        return self.chunk_size - self.step if self.mode == "generic" else 0

    @property
    def fade(self) -> int:
        """Length of the window's linear fades (none in demucs mode)."""
        return self.chunk_size // 10 if self.mode == "generic" else 0


def fade_window(size: int, fade: int) -> torch.Tensor:
    """Ones, with a linear ramp 0..1 over the first and 1..0 over the last ``fade`` samples."""
    window = torch.ones(size)
    if fade > 0:
        window[-fade:] = torch.linspace(1, 0, fade)
        window[:fade] = torch.linspace(0, 1, fade)
    return window


def demix(
    model: torch.nn.Module,
    mix: np.ndarray,
    chunking: Chunking,
    num_stems: int,
    *,
    device: torch.device | str = "cpu",
    target_index: int | None = None,
    configured_stems: int | None = None,
    autocast: bool = False,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> np.ndarray:
    """``(stems, channels, samples)`` from ``mix`` ``(channels, samples)``.

    ``target_index``: of the ``configured_stems`` the config names, only this one
    is wanted (MSST's ``target_instrument``; ``num_stems`` is then 1); the other
    heads are skipped where the model allows it (``active_stem_ids``).
    ``autocast``: mixed precision on the device (MSST enables it on CUDA when the
    config's ``training.use_amp`` is on).
    """
    audio = torch.as_tensor(np.asarray(mix, dtype=np.float32))
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
    mono = audio.shape[0] == 1
    if mono:
        audio = audio.repeat(2, 1)
    length = audio.shape[-1]
    size, step, fade, border = chunking.chunk_size, chunking.step, chunking.fade, chunking.border
    padded = length > 2 * border and border > 0
    if padded:
        audio = F.pad(audio, (border, border), mode="reflect")
    total = audio.shape[-1]
    starts = list(range(0, total, step))
    window = fade_window(size, fade)
    result = torch.zeros((num_stems, *audio.shape), dtype=torch.float32)
    weight = torch.zeros_like(result)
    heads = _active_heads(model, target_index, configured_stems or num_stems)
    device_type = torch.device(device).type
    with torch.autocast(device_type, enabled=autocast), torch.inference_mode():
        for first in range(0, len(starts), chunking.batch_size):
            if should_cancel is not None and should_cancel():
                raise CancelledError()
            batch = starts[first : first + chunking.batch_size]
            chunks = torch.stack(
                [_chunk(audio, start, size, chunking.mode).to(device) for start in batch]
            )
            output = model(chunks) if heads is None else model(chunks, active_stem_ids=heads)
            output = _stems_first(output, num_stems, target_index)
            weights = window.clone()  # all ones without fades (demucs mode)
            if batch[-1] == 0:  # the first chunk alone: it does not fade in
                weights[:fade] = 1
            elif batch[-1] + step >= total:  # a batch holding the last chunk: no fade-out
                weights[-fade:] = 1
            for index, start in enumerate(batch):
                span = min(size, total - start)
                result[..., start : start + span] += (
                    output[index, ..., :span].cpu() * weights[:span]
                )
                weight[..., start : start + span] += weights[:span]
            if progress is not None:
                progress(min(1.0, (first + len(batch)) / len(starts)))
    stems = (result / weight).numpy()
    np.nan_to_num(stems, copy=False, nan=0.0)
    if padded:
        stems = stems[..., border:-border]
    return stems[:, :1] if mono else stems


def _chunk(audio: torch.Tensor, start: int, size: int, how: str) -> torch.Tensor:
    """``size`` samples from ``start``; a short last chunk padded as MSST pads it."""
    part = audio[:, start : start + size]
    missing = size - part.shape[-1]
    if missing == 0:
        return part
    reflect = how == "generic" and part.shape[-1] > size // 2
    mode = "reflect" if reflect else "constant"
    return F.pad(part, (0, missing), mode=mode, value=0)


def _stems_first(output: torch.Tensor, num_stems: int, target_index: int | None) -> torch.Tensor:
    """The model's output as ``(batch, stems, channels, samples)``."""
    if output.dim() == 3:  # one stem, squeezed by the model
        output = output.unsqueeze(1)
    if target_index is not None and output.shape[1] > num_stems:
        output = output[:, target_index : target_index + 1]
    return output


def _active_heads(
    model: torch.nn.Module, target_index: int | None, configured: int
) -> list[int] | None:
    """Ask only for the wanted stem's head, where the model's ``forward`` takes that and it
    has one head per configured stem (MSST's rule)."""
    if target_index is None:
        return None
    try:
        takes_heads = "active_stem_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    heads = getattr(model, "mask_estimators", None)
    return (
        [target_index] if takes_heads and heads is not None and len(heads) == configured else None
    )
