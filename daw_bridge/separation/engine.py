"""Chunked overlap-add inference for Demucs models (our code, demucs's model classes).

The result must equal ``demucs.apply.apply_model`` for the same weights, so the
chunking follows it exactly: segments of ``int(segment * samplerate)`` frames,
a stride of ``(1 - overlap)`` segments, each chunk padded with its real
neighbours (zeros beyond the mix) to the model's valid length, a triangular
cross-fade, and the same random "shift trick" and bag-of-models weighting.
What we add: several chunks per forward pass, device and precision choice, a
progress callback with the real fraction done, and cooperative cancellation.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from demucs.htdemucs import HTDemucs
from torch import nn
from torch.nn import functional as F

from daw_bridge.errors import CancelledError, InvalidOptionError
from daw_bridge.separation.base import CancelCheck, ProgressCallback


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise InvalidOptionError(
            f"Unknown device {requested!r}.", "Use auto, cpu, cuda, cuda:N or mps."
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(
            "CUDA was requested but this PyTorch build sees no NVIDIA GPU.",
            "Use --device cpu (or auto), or install a CUDA build of PyTorch.",
        )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise InvalidOptionError(
            "MPS was requested but is not available here.", "Use --device cpu (or auto)."
        )
    return device


def default_batch_size(device: torch.device) -> int:
    """Segments per forward pass. On 2 CPU cores, batches of 2 ran 25% slower than
    one segment at a time (memory-bound); GPUs need batches to be kept busy."""
    return 1 if device.type == "cpu" else 4


@dataclass(frozen=True)
class _View:
    """A window ``[offset, offset + length)`` on a longer tensor, like demucs's TensorChunk."""

    tensor: torch.Tensor  # (channels, frames)
    offset: int
    length: int

    def padded(self, start: int, length: int, target: int) -> torch.Tensor:
        """Frames ``[start, start + length)`` of the view, widened to ``target`` around them."""
        total = self.tensor.shape[-1]
        begin = self.offset + start - (target - length) // 2
        end = begin + target
        lo, hi = max(0, begin), min(total, end)
        return F.pad(self.tensor[..., lo:hi], (lo - begin, end - hi))


def _triangle(segment_length: int, transition_power: float) -> torch.Tensor:
    half = segment_length // 2
    weight = torch.cat(
        [torch.arange(1, half + 1), torch.arange(segment_length - half, 0, -1)]
    ).float()
    return (weight / weight.max()) ** transition_power


def _center_trim(tensor: torch.Tensor, length: int) -> torch.Tensor:
    delta = tensor.shape[-1] - length
    if delta < 0:
        raise ValueError(f"model output is shorter ({tensor.shape[-1]}) than its input ({length})")
    return tensor[..., delta // 2 : tensor.shape[-1] - (delta - delta // 2)]


class DemucsEngine:
    """Applies one Demucs model, or a weighted bag of them, to a whole mix."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        weights: Sequence[Sequence[float]] | None = None,
        *,
        segment: float | Fraction | None = None,
        overlap: float = 0.25,
        transition_power: float = 1.0,
        shifts: int = 0,
        batch_size: int | None = None,
        device: str | torch.device = "auto",
        half: bool = False,
        seed: int | None = None,
    ) -> None:
        if not models:
            raise ValueError("at least one model is needed")
        first = models[0]
        for model in models:
            if list(model.sources) != list(first.sources) or model.samplerate != first.samplerate:
                raise ValueError("all models of a bag must share sources and sample rate")
        if not 0.0 <= overlap < 1.0:
            raise InvalidOptionError(f"Overlap {overlap} is out of range.", "Use 0 <= overlap < 1.")
        if shifts < 0 or (batch_size is not None and batch_size < 1):
            raise InvalidOptionError("shifts must be >= 0 and batch size >= 1.", "Fix the option.")
        if transition_power < 1:
            raise InvalidOptionError("transition_power must be >= 1.", "Use 1 (linear cross-fade).")
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        if half and self.device.type != "cuda":
            raise InvalidOptionError(
                "Half precision is only offered on CUDA GPUs.", "Drop --half or use --device cuda."
            )
        self.models = [model.to(self.device).eval() for model in models]
        self.weights = (
            [list(map(float, w)) for w in weights]
            if weights is not None
            else [[1.0] * len(first.sources) for _ in models]
        )
        if len(self.weights) != len(self.models):
            raise ValueError("one weight row per model is needed")
        for model in self.models:  # as BagOfModels does with its ``segment``
            shorter = not isinstance(model, HTDemucs) or segment is None or segment <= model.segment
            if segment is not None and shorter:
                model.segment = segment
        self.sources: tuple[str, ...] = tuple(first.sources)
        self.samplerate = int(first.samplerate)
        self.audio_channels = int(first.audio_channels)
        self.overlap = overlap
        self.transition_power = transition_power
        self.shifts = shifts
        self.batch_size = batch_size or default_batch_size(self.device)
        self.half = half
        self._random = random.Random(seed)

    # -- public ---------------------------------------------------------------------

    def apply(
        self,
        mix: torch.Tensor,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> torch.Tensor:
        """Separate ``mix`` (channels, frames) into (sources, channels, frames), on the CPU."""
        mix = mix.detach().to("cpu", torch.float32)
        length = mix.shape[-1]
        passes = max(1, self.shifts)
        units = sum(len(self._offsets(m, length)) for m in self.models) * passes
        tracker = _Progress(units, progress, should_cancel)
        estimate = torch.zeros(len(self.sources), mix.shape[0], length)
        totals = torch.zeros(len(self.sources))
        for model, model_weights in zip(self.models, self.weights, strict=True):
            out = self._apply_shifted(model, mix, tracker)
            row = torch.tensor(model_weights)
            estimate += out * row[:, None, None]
            totals += row
        tracker.finish()
        return estimate / totals[:, None, None]

    # -- internals ------------------------------------------------------------------

    def _segment_length(self, model: nn.Module) -> int:
        return int(model.samplerate * model.segment)

    def _offsets(self, model: nn.Module, length: int) -> range:
        segment_length = self._segment_length(model)
        stride = int((1 - self.overlap) * segment_length)
        return range(0, length, stride)

    def _apply_shifted(
        self, model: nn.Module, mix: torch.Tensor, tracker: _Progress
    ) -> torch.Tensor:
        length = mix.shape[-1]
        if not self.shifts:
            return self._apply_chunked(model, _View(mix, 0, length), tracker)
        max_shift = int(0.5 * model.samplerate)
        padded = F.pad(mix, (max_shift, max_shift))
        out = torch.zeros(len(self.sources), mix.shape[0], length)
        for _ in range(self.shifts):
            offset = self._random.randint(0, max_shift)
            view = _View(padded, offset, length + max_shift - offset)
            shifted = self._apply_chunked(model, view, tracker)
            out += shifted[..., max_shift - offset :]
        return out / self.shifts

    def _apply_chunked(self, model: nn.Module, view: _View, tracker: _Progress) -> torch.Tensor:
        segment_length = self._segment_length(model)
        weight = _triangle(segment_length, self.transition_power)
        out = torch.zeros(len(self.sources), view.tensor.shape[0], view.length)
        sum_weight = torch.zeros(view.length)
        for batch in self._batches(model, view, segment_length):
            tracker.check_cancel()
            inputs = torch.stack([chunk for _, _, chunk in batch]).to(self.device)
            with torch.inference_mode(), self._precision(), _interruptible(model, tracker):
                outputs = model(inputs)
            outputs = outputs.float().cpu()
            for (offset, chunk_length, _), chunk_out in zip(batch, outputs, strict=True):
                chunk_out = _center_trim(chunk_out, chunk_length)
                out[..., offset : offset + chunk_length] += weight[:chunk_length] * chunk_out
                sum_weight[offset : offset + chunk_length] += weight[:chunk_length]
            tracker.advance(len(batch))
        return out / sum_weight

    def _batches(
        self, model: nn.Module, view: _View, segment_length: int
    ) -> Iterator[list[tuple[int, int, torch.Tensor]]]:
        """Groups of ``(offset, length, padded chunk)`` sharing one input length."""
        batch: list[tuple[int, int, torch.Tensor]] = []
        for offset in self._offsets(model, view.length):
            chunk_length = min(segment_length, view.length - offset)
            target = self._valid_length(model, chunk_length)
            chunk = view.padded(offset, chunk_length, target)
            if batch and (len(batch) == self.batch_size or batch[0][2].shape[-1] != target):
                yield batch
                batch = []
            batch.append((offset, chunk_length, chunk))
        if batch:
            yield batch

    @staticmethod
    def _valid_length(model: nn.Module, length: int) -> int:
        valid_length = getattr(model, "valid_length", None)
        return int(valid_length(length)) if valid_length is not None else length

    def _precision(self) -> contextlib.AbstractContextManager[None]:
        if self.half:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()


@contextlib.contextmanager
def _interruptible(model: nn.Module, tracker: _Progress) -> Iterator[None]:
    """Poll for cancellation before every layer, not only between segments.

    One full-size segment takes seconds on a CPU; checking at each layer lets a
    cancel free the worker within a fraction of that.
    """
    if tracker.should_cancel is None:
        yield
        return
    layers = [m for m in model.modules() if not isinstance(m, (nn.ModuleList, nn.ModuleDict))]
    handles = [m.register_forward_pre_hook(lambda *_: tracker.check_cancel()) for m in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _Progress:
    """Counts finished chunks and reports the fraction; polls for cancellation."""

    def __init__(
        self, units: int, callback: ProgressCallback | None, should_cancel: CancelCheck | None
    ) -> None:
        self.units = max(1, units)
        self.done = 0
        self.callback = callback
        self.should_cancel = should_cancel

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise CancelledError()

    def advance(self, count: int) -> None:
        self.done += count
        if self.callback is not None:
            self.callback(min(1.0, self.done / self.units))

    def finish(self) -> None:
        if self.callback is not None and self.done < self.units:
            self.callback(1.0)


class DemucsSeparator:
    """A :class:`~daw_bridge.separation.base.Separator` around :class:`DemucsEngine`.

    Like demucs's own front ends, the mix is normalised by the mean and standard
    deviation of its mono sum before inference and the stems are scaled back,
    so the model sees the level it was trained on and the user gets theirs.
    Mono input is fed to the stereo model on both channels and averaged back.
    """

    def __init__(self, name: str, engine: DemucsEngine) -> None:
        self.name = name
        self.engine = engine
        self.sources = engine.sources
        self.samplerate = engine.samplerate

    def separate(
        self,
        mix: np.ndarray,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> np.ndarray:
        channels = mix.shape[0]
        wav = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))
        if channels == 1 and self.engine.audio_channels == 2:
            wav = wav.expand(2, -1)
        elif channels != self.engine.audio_channels:
            raise InvalidOptionError(
                f"The model takes {self.engine.audio_channels} channels, the audio has {channels}.",
                "Use mono or stereo audio.",
            )
        reference = wav.mean(0)
        mean, std = reference.mean(), reference.std() + 1e-8
        stems = self.engine.apply((wav - mean) / std, progress, should_cancel)
        stems = stems * std + mean
        if channels == 1 and self.engine.audio_channels == 2:
            stems = stems.mean(dim=1, keepdim=True)
        return stems.numpy()
