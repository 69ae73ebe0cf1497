"""Chunked overlap-add inference for Demucs models (our code, demucs's model classes).

The result must equal ``demucs.apply.apply_model`` for the same weights, so the
chunking follows it exactly: segments of ``int(segment * samplerate)`` frames,
a stride of ``(1 - overlap)`` segments, each chunk padded with its real
neighbours (zeros beyond the mix) to the model's valid length, a triangular
cross-fade, and the same random "shift trick" and bag-of-models weighting.
What we add: several chunks per forward pass, device and precision choice, a
progress callback with the real fraction done, cooperative cancellation, a
streaming form (:meth:`DemucsEngine.apply_stream`: blocks in, finished blocks
out, bounded memory) and, on the CPU, a faster backend for HTDemucs: its network
core in OpenVINO (:mod:`daw_bridge.separation.accel`, about -111 dB from the
PyTorch output). ``backend="torch"`` keeps ``apply_model``'s exact numbers on the
CPU; on a GPU, where cuFFT may mix a batch's imaginary 0 Hz parts, it keeps the
CPU's (:mod:`daw_bridge.separation.spectrum`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from demucs.htdemucs import HTDemucs
from torch import nn
from torch.nn import functional as F

from daw_bridge.errors import CancelledError, InvalidOptionError, ModelOutputError
from daw_bridge.separation.accel import AcceleratedCore
from daw_bridge.separation.backends import (
    BACKEND_ENV,
    DEFAULT_CPU_BACKEND,
    REDUCED_PRECISION,
    backend_available,
    check_backend,
    cpu_computes,
    install_hint,
)
from daw_bridge.separation.base import CancelCheck, ProgressCallback
from daw_bridge.separation.htcore import forward_with_core, supports_core
from daw_bridge.separation.spectrum import give_one_sided_spectra

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """No TF32 on CUDA (PyTorch lets convolutions use it by default): float32 is float32."""
    matmul = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if matmul is None:  # PyTorch before 2.9
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        return
    conv = torch.backends.cudnn.conv.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = matmul
        torch.backends.cudnn.conv.fp32_precision = conv


#: GPU memory a batch may use per htdemucs segment: a float32 forward pass holds about
#: 370 MiB of activations per 7.8 s segment (measured on the CPU), rounded up.
_SEGMENT_BYTES_ON_GPU = 512 << 20


def default_batch_size(device: torch.device) -> int:
    """Segments per forward pass. On 2 CPU cores, batches of 2 ran 25% slower than
    one segment at a time (memory-bound). GPUs need batches to be kept busy: on an
    H200, 16 segments ran 1.5x faster than 4 (benchmarks/throughput.py), so CUDA
    takes up to 16, as many as half the card's memory holds."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return max(1, min(16, total // 2 // _SEGMENT_BYTES_ON_GPU))
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
        half_dtype: torch.dtype = torch.float16,
        seed: int | None = None,
        backend: str | None = None,
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
        if half_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"half_dtype must be float16 or bfloat16, not {half_dtype}")
        self.models = [give_one_sided_spectra(model.to(self.device).eval()) for model in models]
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
        self.half_dtype = half_dtype
        self._random = random.Random(seed)
        self.backend = self._pick_backend(backend or os.environ.get(BACKEND_ENV) or "auto")
        self._cores: dict[int, AcceleratedCore] = {}
        if self.backend != "torch":
            self._cores = {id(m): AcceleratedCore(m, self.backend) for m in self.models}
            self.prepare()  # export (first time only) or load now, not in the first job

    def _pick_backend(self, requested: str) -> str:
        """``auto``: OpenVINO for HTDemucs on the CPU, else PyTorch (loudly, if it is missing).

        ``torch`` always gives exactly ``demucs.apply.apply_model``'s numbers.
        ``$DAW_BRIDGE_BACKEND`` sets the choice when the caller does not.
        """
        check_backend(requested)
        eligible = self.device.type == "cpu" and all(supports_core(m) for m in self.models)
        if requested == "torch":
            return "torch"
        if requested != "auto":
            if not eligible:
                raise InvalidOptionError(
                    f"The {requested} backend runs HTDemucs models on the CPU only.",
                    f"Set {BACKEND_ENV}=torch (or auto) for this model or device.",
                )
            if not backend_available(requested):
                raise InvalidOptionError(
                    f"The {requested} backend is not installed.",
                    f"Install it: {install_hint(requested)} (or set {BACKEND_ENV}=torch).",
                )
            if requested in REDUCED_PRECISION and not cpu_computes(requested):
                precision = REDUCED_PRECISION[requested]
                raise InvalidOptionError(
                    f"This CPU has no {precision.arithmetic} arithmetic ({precision.hardware}), "
                    f"so the {requested} backend would run in float32 anyway.",
                    "Use the openvino backend (or auto).",
                )
            return requested
        if not eligible:
            return "torch"
        if not backend_available(DEFAULT_CPU_BACKEND):
            log.warning(
                "%s is not installed: separating with plain PyTorch, about 1.5x slower on "
                "the CPU. Fix: %s (or set %s=torch to silence this).",
                DEFAULT_CPU_BACKEND,
                install_hint(DEFAULT_CPU_BACKEND),
                BACKEND_ENV,
            )
            return "torch"
        return DEFAULT_CPU_BACKEND

    def prepare(self) -> None:
        """Export or load the accelerated core now instead of on the first segment."""
        for model in self.models:
            core = self._cores.get(id(model))
            if core is None:
                continue
            frames = self._valid_length(model, self._segment_length(model))
            mix = torch.zeros(1, self.audio_channels, frames)
            with torch.inference_mode():
                mag = model._magnitude(model._spec(mix))
            self._guarded(lambda core=core, mix=mix, mag=mag: core.prepare(mix, mag))

    def _guarded(self, action):
        try:
            return action()
        except (CancelledError, InvalidOptionError):
            raise
        except Exception as error:  # export and native runtimes raise many types
            log.warning(
                "The %s backend failed (%s): falling back to plain PyTorch, about 1.5x "
                "slower. Fix: reinstall it (%s -U) or set %s=torch to silence this.",
                self.backend,
                error,
                install_hint(self.backend),
                BACKEND_ENV,
            )
            self.backend = "torch"
            self._cores = {}
            return None

    def _forward(self, model: nn.Module, inputs: torch.Tensor, tracker: _Progress) -> torch.Tensor:
        core = self._cores.get(id(model))
        if core is not None:

            def accelerated(mix: torch.Tensor, mag: torch.Tensor):
                return core(mix, mag, tracker.should_cancel)

            out = self._guarded(lambda: forward_with_core(model, inputs, accelerated))
            if out is not None:
                return out
        with _interruptible(model, tracker):
            return model(inputs)

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

    def apply_stream(
        self,
        blocks: Iterable[torch.Tensor],
        frames_hint: int | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Iterator[torch.Tensor]:
        """Like :meth:`apply`, on a mix that arrives in blocks, with bounded memory.

        ``blocks`` are ``(channels, n)`` pieces of the mix, in order; the result
        comes back as ``(sources, channels, m)`` pieces, in order, as soon as the
        overlap-add has finished them, and adds up to the same length. Only about
        one segment of input and output per model and shift is held at a time.
        The numbers are those of :meth:`apply` (bit for bit with one model and
        no shifts). ``frames_hint``, the expected length, only scales progress.
        """
        stream = _Stream(iter(blocks))
        passes: list[_Pass] = []
        totals = torch.zeros(len(self.sources))
        for model_weights in self.weights:
            totals += torch.tensor(model_weights)
        for model, model_weights in zip(self.models, self.weights, strict=True):
            coefficient = torch.tensor(model_weights) / totals
            if not self.shifts:
                passes.append(_Pass(self, model, stream, 0, coefficient))
                continue
            for delay in self._shift_delays(model):
                passes.append(_Pass(self, model, stream, delay, coefficient / self.shifts))
        units = 1
        if frames_hint:
            units = sum(len(self._offsets(p.model, frames_hint + p.delay)) for p in passes)
        tracker = _Progress(units, progress, should_cancel)
        emitted = 0
        while True:
            laggard = min(passes, key=lambda p: p.frontier)
            if laggard.finished:
                break
            laggard.step(tracker)
            frontier = min(p.frontier for p in passes)
            if all(p.finished for p in passes):
                frontier = stream.end
            stream.release(min(p.needed_from for p in passes))
            if frontier > emitted:
                yield _combine(passes, emitted, frontier)
                emitted = frontier
        tracker.finish()

    # -- internals ------------------------------------------------------------------

    def _segment_length(self, model: nn.Module) -> int:
        return int(model.samplerate * model.segment)

    def _stride(self, model: nn.Module) -> int:
        return int((1 - self.overlap) * self._segment_length(model))

    def _offsets(self, model: nn.Module, length: int) -> range:
        return range(0, length, self._stride(model))

    def _apply_shifted(
        self, model: nn.Module, mix: torch.Tensor, tracker: _Progress
    ) -> torch.Tensor:
        length = mix.shape[-1]
        if not self.shifts:
            return self._apply_chunked(model, _View(mix, 0, length), tracker)
        max_shift = _max_shift(model)
        padded = F.pad(mix, (max_shift, max_shift))
        out = torch.zeros(len(self.sources), mix.shape[0], length)
        for delay in self._shift_delays(model):
            view = _View(padded, max_shift - delay, length + delay)
            shifted = self._apply_chunked(model, view, tracker)
            out += shifted[..., delay:]
        return out / self.shifts

    def _shift_delays(self, model: nn.Module) -> list[int]:
        """The shift trick's random draws, as demucs makes them: for each pass, how many
        frames of padding its view starts before the mix (0 to half a second)."""
        max_shift = _max_shift(model)
        return [max_shift - self._random.randint(0, max_shift) for _ in range(self.shifts)]

    def _apply_chunked(self, model: nn.Module, view: _View, tracker: _Progress) -> torch.Tensor:
        """The overlap-add runs where the model does (as in ``apply_model``): on a GPU,
        only the finished stems cross back to the CPU, once."""
        segment_length = self._segment_length(model)
        weight = _triangle(segment_length, self.transition_power).to(self.device)
        out = torch.zeros(len(self.sources), view.tensor.shape[0], view.length, device=self.device)
        sum_weight = torch.zeros(view.length, device=self.device)
        for batch in self._batches(model, view, segment_length):
            for offset, chunk_length, chunk_out in self._infer(model, batch, tracker):
                out[..., offset : offset + chunk_length] += weight[:chunk_length] * chunk_out
                sum_weight[offset : offset + chunk_length] += weight[:chunk_length]
            tracker.advance(len(batch))
        return (out / sum_weight).cpu()

    def _infer(
        self, model: nn.Module, batch: list[tuple[int, int, torch.Tensor]], tracker: _Progress
    ) -> list[tuple[int, int, torch.Tensor]]:
        """One forward pass over a batch of padded chunks: ``(offset, length, output)`` each,
        the output (float32, on the model's device) trimmed back to the chunk's length."""
        tracker.check_cancel()
        inputs = torch.stack([chunk for _, _, chunk in batch]).to(self.device)
        with torch.inference_mode(), self._precision():
            outputs = self._forward(model, inputs, tracker)
        outputs = outputs.float()
        if not bool(torch.isfinite(outputs).all()):  # the inputs were checked when read
            raise self._non_finite_output()
        return [
            (offset, chunk_length, _center_trim(chunk_out, chunk_length))
            for (offset, chunk_length, _), chunk_out in zip(batch, outputs, strict=True)
        ]

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

    def _non_finite_output(self) -> ModelOutputError:
        """What went wrong when the network's output holds NaN or infinity, and the fix.

        Reduced precision overflows where activations outgrow its range: OpenVINO's
        float16 did so on trained weights (a Xeon with AVX-512 FP16, 2026-11-27)."""
        problem = ModelOutputError.PROBLEM
        if self.backend in REDUCED_PRECISION:
            precision = REDUCED_PRECISION[self.backend]
            return ModelOutputError(
                f"{problem}: the {self.backend} backend overflowed {precision.arithmetic} "
                "on this model and audio. Nothing was written.",
                f"Use the openvino backend (float32): --backend openvino, or unset {BACKEND_ENV}.",
            )
        if self.half:
            return ModelOutputError(
                f"{problem}: half precision ({str(self.half_dtype).removeprefix('torch.')}) "
                "overflowed on this model and audio. Nothing was written.",
                "Drop --half (float32 on the GPU).",
            )
        return ModelOutputError.in_float32(f" with the {self.backend} backend")

    def _precision(self) -> contextlib.AbstractContextManager[None]:
        if self.half:
            return torch.autocast(device_type="cuda", dtype=self.half_dtype)
        return contextlib.nullcontext()


def _max_shift(model: nn.Module) -> int:
    return int(0.5 * model.samplerate)


class _Stream:
    """A forward-only window on a mix that arrives in blocks; zeros outside the mix."""

    def __init__(self, blocks: Iterator[torch.Tensor]) -> None:
        self.blocks = blocks
        self.buffer: torch.Tensor | None = None
        self.start = 0  # mix frame of buffer[..., 0]
        self.ended = False

    @property
    def end(self) -> int:
        return self.start + (0 if self.buffer is None else self.buffer.shape[-1])

    def fill(self, until: int) -> None:
        """Read until frame ``until`` is buffered or the mix has ended."""
        pieces = [] if self.buffer is None else [self.buffer]
        end = self.end
        while end < until and not self.ended:
            block = next(self.blocks, None)
            if block is None:
                self.ended = True
                break
            block = torch.as_tensor(block, dtype=torch.float32)
            pieces.append(block)
            end += block.shape[-1]
        if pieces:
            self.buffer = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def known_length(self, at_least: int) -> int | None:
        """The mix length if it ends before ``at_least`` frames, else None."""
        self.fill(at_least)
        return self.end if self.ended and self.end < at_least else None

    def window(self, begin: int, end: int) -> torch.Tensor:
        """Mix frames ``[begin, end)``, zeros where they fall outside the mix."""
        self.fill(end)
        if max(begin, 0) < min(end, self.start):
            raise RuntimeError("frames already released were requested")
        lo, hi = max(begin, self.start, 0), min(end, self.end)
        if self.buffer is None or lo >= hi:
            channels = 0 if self.buffer is None else self.buffer.shape[0]
            return torch.zeros(channels, end - begin)
        piece = self.buffer[..., lo - self.start : hi - self.start]
        return F.pad(piece, (lo - begin, end - hi))

    def release(self, before: int) -> None:
        if self.buffer is not None and before > self.start:
            drop = min(before - self.start, self.buffer.shape[-1])
            self.buffer = self.buffer[..., drop:].clone()
            self.start += drop


class _Pass:
    """One model, one shift: overlap-add over a view of the mix delayed by ``delay`` frames.

    View frame ``j`` is mix frame ``j - delay`` (the shift trick pads the mix and
    starts the view ``delay`` frames before it); the view is ``length + delay``
    frames long and its output is read from view frame ``delay`` on, exactly as
    :meth:`DemucsEngine._apply_shifted` does.
    """

    def __init__(
        self,
        engine: DemucsEngine,
        model: nn.Module,
        stream: _Stream,
        delay: int,
        coefficient: torch.Tensor,
    ) -> None:
        self.engine, self.model, self.stream, self.delay = engine, model, stream, delay
        self.coefficient = coefficient[:, None, None]
        self.segment = engine._segment_length(model)
        self.stride = engine._stride(model)
        self.weight = _triangle(self.segment, engine.transition_power)
        self.next_offset = 0  # view frame of the next chunk
        self.view_length: int | None = None
        self.acc_start = 0  # view frame of acc[..., 0]
        self.acc = torch.zeros(0)
        self.acc_weight = torch.zeros(0)
        self.ready: list[torch.Tensor] = []  # finished output, mix frames [ready_start, frontier)
        self.ready_start = 0
        self.frontier = 0  # mix frames before this are final
        self.finished = False

    @property
    def needed_from(self) -> int:
        """The first mix frame this pass may still read."""
        if self.finished:
            return 1 << 62
        return self.next_offset - self.segment - self.delay

    def _view_length(self, at_least: int) -> int | None:
        """The view length if the view ends before ``at_least`` frames (else None)."""
        if self.view_length is None:
            length = self.stream.known_length(at_least - self.delay)
            if length is not None:
                self.view_length = length + self.delay
        if self.view_length is not None and self.view_length < at_least:
            return self.view_length
        return None

    def step(self, tracker: _Progress) -> None:
        """Run the next batch of chunks and move the frontier."""
        engine, model = self.engine, self.model
        batch: list[tuple[int, int, torch.Tensor]] = []
        while len(batch) < engine.batch_size:
            offset = self.next_offset
            short = self._view_length(offset + self.segment)
            if short is not None and offset >= short:
                break
            chunk_length = self.segment if short is None else min(self.segment, short - offset)
            target = engine._valid_length(model, chunk_length)
            if batch and batch[0][2].shape[-1] != target:
                break
            begin = offset - (target - chunk_length) // 2 - self.delay
            batch.append((offset, chunk_length, self.stream.window(begin, begin + target)))
            self.next_offset += self.stride
        if batch:
            channels = batch[0][2].shape[0]
            outputs = engine._infer(model, batch, tracker)
            last = batch[-1][0] + batch[-1][1]
            if self.acc.dim() == 1:
                self.acc = torch.zeros(len(engine.sources), channels, 0)
            grow = last - self.acc_start - self.acc.shape[-1]
            if grow > 0:
                self.acc = F.pad(self.acc, (0, grow))
                self.acc_weight = F.pad(self.acc_weight, (0, grow))
            for offset, chunk_length, chunk_out in outputs:
                lo = offset - self.acc_start
                chunk_out = chunk_out.cpu()
                self.acc[..., lo : lo + chunk_length] += self.weight[:chunk_length] * chunk_out
                self.acc_weight[lo : lo + chunk_length] += self.weight[:chunk_length]
            tracker.advance(len(batch))
        short = self._view_length(self.next_offset + 1)
        done = short is not None and self.next_offset >= short
        final_view = (self.acc_start + self.acc.shape[-1]) if done else self.next_offset
        self._emit(final_view)
        if done:
            self.finished = True
            self.frontier = 1 << 62

    def _emit(self, until: int) -> None:
        """Move view frames ``[acc_start, until)`` (final) to the ready output."""
        count = until - self.acc_start
        if count <= 0:
            return
        out = self.acc[..., :count] / self.acc_weight[:count]
        self.acc = self.acc[..., count:].clone()
        self.acc_weight = self.acc_weight[count:].clone()
        first = self.acc_start - self.delay  # as a mix frame
        self.acc_start = until
        if first < 0:
            out = out[..., -first:]
            first = 0
        if out.shape[-1]:
            if not self.ready:
                self.ready_start = first
            self.ready.append(out * self.coefficient)
        self.frontier = max(self.frontier, until - self.delay)

    def take(self, start: int, end: int) -> torch.Tensor:
        """Mix frames ``[start, end)`` of the (weighted) output, dropped once taken."""
        joined = torch.cat(self.ready, dim=-1) if len(self.ready) > 1 else self.ready[0]
        assert self.ready_start == start, (self.ready_start, start)
        piece, rest = joined[..., : end - start], joined[..., end - start :]
        self.ready = [rest] if rest.shape[-1] else []
        self.ready_start = end
        return piece


def _combine(passes: list[_Pass], start: int, end: int) -> torch.Tensor:
    total = passes[0].take(start, end)
    for other in passes[1:]:
        total = total + other.take(start, end)
    return total


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
        mono = self._upmixes(mix.shape[0])
        wav = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))
        if mono:
            wav = wav.expand(2, -1)
        reference = wav.mean(0)
        mean, std = reference.mean(), reference.std() + 1e-8
        stems = self.engine.apply((wav - mean) / std, progress, should_cancel)
        stems = stems * std + mean
        if mono:
            stems = stems.mean(dim=1, keepdim=True)
        return stems.numpy()

    def _upmixes(self, channels: int) -> bool:
        """Whether mono audio goes to the stereo model on both channels; other counts fail."""
        if channels not in (1, self.engine.audio_channels):
            raise InvalidOptionError(
                f"The model takes {self.engine.audio_channels} channels, the audio has {channels}.",
                "Use mono or stereo audio.",
            )
        return channels == 1 and self.engine.audio_channels == 2

    def separate_stream(
        self,
        blocks: Iterable[np.ndarray],
        *,
        channels: int,
        mean: float,
        std: float,
        frames_hint: int | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Iterator[np.ndarray]:
        """:meth:`separate` for a mix arriving in ``(channels, n)`` blocks, bounded memory.

        ``mean`` and ``std`` are those of the whole mix's mono sum (``std`` as
        ``torch.std``, unbiased, without the 1e-8), which :meth:`separate`
        computes itself; the caller gets them from a first pass over the file.
        Yields ``(sources, channels, m)`` blocks adding up to the mix's length.
        """
        mono = self._upmixes(channels)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32) + 1e-8

        def model_blocks() -> Iterator[torch.Tensor]:
            for block in blocks:
                wav = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
                if mono:
                    wav = wav.expand(2, -1)
                yield (wav - mean_t) / std_t

        for stems in self.engine.apply_stream(model_blocks(), frames_hint, progress, should_cancel):
            stems = stems * std_t + mean_t
            if mono:
                stems = stems.mean(dim=1, keepdim=True)
            yield stems.numpy()
