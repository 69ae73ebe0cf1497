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
- Where we differ on purpose: a batch whose output holds NaN or infinity (MSST
  would write it as silence) is recomputed in float32 if mixed precision
  overflowed, with a warning, and is an error in float32.
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
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from daw_bridge.errors import CancelledError, ModelOutputError
from daw_bridge.separation.base import CancelCheck, ProgressCallback

log = logging.getLogger(__name__)

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
    **options: Any,
) -> np.ndarray:
    """``(stems, channels, samples)`` from ``mix`` ``(channels, samples)``: the blocks of
    :func:`demix_stream` for the whole mix, joined. ``options`` are those of
    :func:`demix_stream`."""
    mix = np.asarray(mix, dtype=np.float32)
    if mix.ndim == 1:
        mix = mix[np.newaxis]
    blocks = list(demix_stream(model, [mix], mix.shape[-1], chunking, num_stems, **options))
    if not blocks:
        return np.zeros((num_stems, *mix.shape), np.float32)
    return np.concatenate(blocks, axis=-1)


def demix_stream(
    model: torch.nn.Module,
    blocks: Iterable[np.ndarray],
    length: int,
    chunking: Chunking,
    num_stems: int,
    *,
    device: torch.device | str = "cpu",
    target_index: int | None = None,
    configured_stems: int | None = None,
    autocast: bool | torch.dtype = False,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> Iterator[np.ndarray]:
    """MSST's ``demix`` on a mix of ``length`` samples arriving in ``(channels, n)`` blocks:
    yields ``(stems, channels, m)`` blocks as soon as no later chunk reaches them, so
    memory stays bounded (about a batch of chunks) whatever the length.

    The sums are made in the same order as over the whole mix, so the output is the
    same, bit for bit. The length must be known up front, since MSST decides the
    padding and the last batch's fades from it.

    ``target_index``: of the ``configured_stems`` the config names, only this one
    is wanted (MSST's ``target_instrument``; ``num_stems`` is then 1); the other
    heads are skipped where the model allows it (``active_stem_ids``).
    ``autocast``: mixed precision on the device: True for the device's default type
    (MSST enables it on CUDA when the config's ``training.use_amp`` is on), or a dtype
    such as ``torch.bfloat16``.
    """
    size, step, fade, border = chunking.chunk_size, chunking.step, chunking.fade, chunking.border
    padded = length > 2 * border and border > 0
    pad = border if padded else 0
    total = length + 2 * pad
    starts = list(range(0, total, step))
    window = fade_window(size, fade)
    heads = _active_heads(model, target_index, configured_stems or num_stems)

    def run(chunks: torch.Tensor) -> torch.Tensor:
        return model(chunks) if heads is None else model(chunks, active_stem_ids=heads)

    device_type = torch.device(device).type
    dtype = autocast if isinstance(autocast, torch.dtype) else None
    stereo = _StereoBlocks(blocks, length)
    inputs = _Samples(_reflect_padded(iter(stereo), pad))
    result = weight = torch.zeros(0)
    held_from = 0  # where ``result`` and ``weight`` start, in padded samples
    with torch.autocast(device_type, dtype, enabled=bool(autocast)), torch.inference_mode():
        for first in range(0, len(starts), chunking.batch_size):
            if should_cancel is not None and should_cancel():
                raise CancelledError()
            batch = starts[first : first + chunking.batch_size]
            inputs.read_until(min(batch[-1] + size, total))
            chunks = torch.stack(
                [
                    _chunk(inputs.span(start, size), size, chunking.mode).to(device)
                    for start in batch
                ]
            )
            output = run(chunks)
            if not bool(torch.isfinite(output).all()):
                output = _recomputed_in_float32(run, chunks, device_type, bool(autocast))
            output = _stems_first(output, num_stems, target_index)
            weights = window.clone()  # all ones without fades (demucs mode)
            if batch[-1] == 0:  # the first chunk alone: it does not fade in
                weights[:fade] = 1
            elif batch[-1] + step >= total:  # a batch holding the last chunk: no fade-out
                weights[-fade:] = 1
            reach = min(batch[-1] + size, total)
            if first == 0:
                result = weight = torch.zeros((num_stems, chunks.shape[1], 0))
            if result.shape[-1] < reach - held_from:
                grow = torch.zeros((*result.shape[:2], reach - held_from - result.shape[-1]))
                result, weight = torch.cat([result, grow], -1), torch.cat([weight, grow], -1)
            for index, start in enumerate(batch):
                span = min(size, total - start)
                at = start - held_from
                result[..., at : at + span] += output[index, ..., :span].cpu() * weights[:span]
                weight[..., at : at + span] += weights[:span]
            done = starts[first + len(batch)] if first + len(batch) < len(starts) else total
            finished = (result[..., : done - held_from] / weight[..., : done - held_from]).numpy()
            np.nan_to_num(finished, copy=False, nan=0.0)
            kept = finished[..., max(0, pad - held_from) : max(0, pad + length - held_from)]
            result, weight = result[..., done - held_from :], weight[..., done - held_from :]
            inputs.forget_before(done)
            held_from = done
            if progress is not None:
                progress(min(1.0, (first + len(batch)) / len(starts)))
            if kept.shape[-1]:
                yield kept[:, :1] if stereo.mono else kept


def _recomputed_in_float32(
    run: Callable[[torch.Tensor], torch.Tensor],
    chunks: torch.Tensor,
    device_type: str,
    mixed: bool,
) -> torch.Tensor:
    """A batch whose output holds NaN or infinity: recomputed in float32 if mixed
    precision overflowed (loudly), else an error.

    MSST's ``demix`` turns NaN into 0, so an overflow there gives silent stems; here
    a float16 overflow (MSST's default on CUDA) costs one float32 pass instead."""
    if mixed:
        log.warning(
            "Mixed precision (float16 or bfloat16) overflowed on a batch of chunks: "
            "recomputed it in float32, as a float32 run would compute it (slower). "
            "If this repeats, run without --half, or on a GPU set use_amp: false in "
            "the model's config."
        )
        with torch.autocast(device_type, enabled=False):
            output = run(chunks.float())
        if bool(torch.isfinite(output).all()):
            return output
    raise ModelOutputError.in_float32()


class _StereoBlocks:
    """The blocks as tensors, a mono mix doubled to stereo as MSST does (``mono`` says
    so, to undo it); checks that they hold the announced ``length`` in all."""

    def __init__(self, blocks: Iterable[np.ndarray], length: int) -> None:
        self._blocks, self._length, self.mono = blocks, length, False

    def __iter__(self) -> Iterator[torch.Tensor]:
        seen = 0
        for block in self._blocks:
            audio = torch.as_tensor(np.asarray(block, dtype=np.float32))
            if audio.dim() == 1:
                audio = audio.unsqueeze(0)
            seen += audio.shape[-1]
            if seen > self._length:
                raise ValueError(f"the mix has more than the {self._length} samples announced")
            self.mono = audio.shape[0] == 1
            yield audio.repeat(2, 1) if self.mono else audio
        if seen != self._length:
            raise ValueError(f"the mix has {seen} samples, not the {self._length} announced")


def _reflect_padded(blocks: Iterator[torch.Tensor], pad: int) -> Iterator[torch.Tensor]:
    """The blocks with ``pad`` samples mirrored on both ends, as ``F.pad(mode="reflect")``
    pads the whole mix: the head mirrors samples 1..pad, the tail the ``pad`` samples
    before the last. The last ``pad + 1`` samples are held back until the end."""
    if pad == 0:
        yield from blocks
        return
    held: torch.Tensor | None = None
    started = False
    for block in blocks:
        held = block if held is None else torch.cat([held, block], -1)
        if not started:
            if held.shape[-1] <= pad:
                continue
            yield held[:, 1 : pad + 1].flip(-1)
            started = True
        if held.shape[-1] > pad + 1:
            yield held[:, : -(pad + 1)]
            held = held[:, -(pad + 1) :]
    if held is not None:  # padding is only asked for a mix longer than 2 * pad
        yield held
        yield held[:, :-1].flip(-1)


class _Samples:
    """A window on the padded mix: reads blocks on demand, forgets what no chunk needs."""

    def __init__(self, blocks: Iterator[torch.Tensor]) -> None:
        self._blocks = blocks
        self._held: list[torch.Tensor] = []
        self._start = 0  # padded position of the first held sample
        self._end = 0

    def read_until(self, end: int) -> None:
        while self._end < end:
            block = next(self._blocks)
            self._held.append(block)
            self._end += block.shape[-1]

    def span(self, start: int, size: int) -> torch.Tensor:
        """Samples ``[start, start + size)``, fewer at the end of the mix."""
        if len(self._held) > 1:
            self._held = [torch.cat(self._held, -1)]
        held = self._held[0]
        return held[:, start - self._start : start - self._start + size]

    def forget_before(self, position: int) -> None:
        if self._held and position > self._start:
            held = torch.cat(self._held, -1) if len(self._held) > 1 else self._held[0]
            self._held = [held[:, position - self._start :].clone()]
            self._start = position


def _chunk(part: torch.Tensor, size: int, how: str) -> torch.Tensor:
    """A chunk of ``size`` samples; a short last chunk padded as MSST pads it."""
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
