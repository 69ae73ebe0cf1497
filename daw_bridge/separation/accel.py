"""Faster CPU inference for HTDemucs: its network core in ONNX Runtime or OpenVINO.

HTDemucs as a whole does not export (complex STFT tensors), so, like the public
ONNX ports, we export only the real-valued core between the complex-as-channels
spectrogram and the decoder outputs (:mod:`daw_bridge.separation.htcore`) and
keep the STFT and iSTFT in torch. Measured on a 2-core CPU, OpenVINO (the
default) and ONNX Runtime run the core 1.4x to 2x faster than eager PyTorch,
OpenVINO ahead, with a relative deviation of about -111 dB from PyTorch's
output (``benchmarks/throughput.py``; -88 dB before the inputs' normalisation
moved out of the core into PyTorch). Exporting needs the ``onnx`` package.
OpenVINO computes in float32 unless ``openvino-bf16`` or ``openvino-f16`` is asked
for by name, and each compiled graph is checked to compute in the precision asked.

The exported graph is cached on disk, keyed by the weights and the versions
involved, so only the first load of a model pays for the export.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from daw_bridge.errors import CancelledError
from daw_bridge.separation.backends import (
    REDUCED_PRECISION,
    backend_available,
    install_hint,
    is_accelerated,
)
from daw_bridge.separation.htcore import HTDemucsCore, supports_core

log = logging.getLogger(__name__)

_OPSET = 17
#: What the exported core computes; raised when that changes, so no cached export of an
#: older form is reused (2: the inputs' normalisation moved out, into PyTorch).
_CORE_FORM = 2
_CANCEL_POLL_S = 0.05
#: Disk kept for exported cores, least recently used pruned first. A full-size
#: htdemucs core is about 170 MB, so this holds about a dozen models' worth.
COMPILED_CACHE_BYTES = 2 * 2**30
#: A partial export older than this was left by a process that died mid-write.
_STALE_PARTIAL_S = 3600.0
#: OpenVINO's inference precision per backend. It must be pinned: left to its
#: default, OpenVINO computes in bfloat16 on CPUs with AMX or AVX-512 BF16, which
#: moves stems by up to -46 dB, where we promise float32.
_OPENVINO_PRECISION = {
    "openvino": "f32",
    **{backend: precision.openvino_type for backend, precision in REDUCED_PRECISION.items()},
}


class BackendUnavailable(RuntimeError):
    """The accelerated backend cannot run here (not installed, export failed)."""


def compiled_dir() -> Path:
    """Where exported cores are kept: ``<weights cache>/compiled``."""
    from daw_bridge.models.weights import cache_dir

    return cache_dir() / "compiled"


def _fingerprint(model: nn.Module, shapes: tuple[tuple[int, ...], ...], backend: str) -> str:
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "class": type(model).__name__,
                "kwargs": repr(getattr(model, "_init_args_kwargs", None)),
                "segment": str(model.segment),
                "shapes": shapes,
                "torch": torch.__version__,
                "backend": backend,
                "opset": _OPSET,
                "core": _CORE_FORM,
            },
            sort_keys=True,
        ).encode()
    )
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def export_core(model: nn.Module, mix: torch.Tensor, mag: torch.Tensor) -> bytes:
    """The core of ``model`` as an ONNX graph for inputs shaped like ``mix`` and ``mag``."""
    buffer = io.BytesIO()
    core = HTDemucsCore(model).eval()
    # With gradients on, nn.MultiheadAttention takes its exportable (non-fused) path.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
        warnings.simplefilter("ignore")
        example = (torch.randn(mix.shape), torch.randn(mag.shape))
        torch.onnx.export(
            core,
            example,
            buffer,
            input_names=["mix", "mag"],
            output_names=["x", "xt"],
            opset_version=_OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def _cached_onnx(model: nn.Module, mix: torch.Tensor, mag: torch.Tensor, backend: str) -> Path:
    shapes = (tuple(mix.shape), tuple(mag.shape))
    folder = compiled_dir()
    path = folder / f"htdemucs-core-{_fingerprint(model, shapes, 'onnx')}.onnx"
    if path.is_file():
        with contextlib.suppress(OSError):
            os.utime(path)  # marks it recently used for the pruning below
        return path
    log.info("exporting the network core for %s (once per model)", backend)
    data = export_core(model, mix, mag)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)  # atomic: concurrent loaders never see half a file
    _prune_compiled(folder, keep=path)
    return path


def _prune_compiled(folder: Path, keep: Path, budget: int = COMPILED_CACHE_BYTES) -> None:
    """Keep the exported cores within ``budget`` bytes, dropping the least recently used.

    Every export adds one file per distinct set of weights (and input shape),
    so without this the folder grows with each model a user ever tried. A
    dropped core is simply exported again the next time its model loads; a
    process that already compiled it keeps running from memory.
    """
    now = time.time()
    cores = []
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):
            stat = entry.stat()
            if entry.name.endswith(".partial"):
                if now - stat.st_mtime > _STALE_PARTIAL_S:
                    entry.unlink()
            elif entry.suffix == ".onnx":
                cores.append((stat.st_mtime, stat.st_size, entry))
    used = 0
    # The core just written counts first, then the others from the most recently used.
    for _mtime, size, entry in sorted(cores, key=lambda core: (core[2] != keep, -core[0])):
        used += size
        if used > budget and entry != keep:
            with contextlib.suppress(OSError):
                entry.unlink()
                log.info("removed the least recently used exported core %s", entry.name)


class AcceleratedCore:
    """Runs :class:`HTDemucsCore` of one model in ONNX Runtime or OpenVINO.

    Sessions are built lazily for each input shape (the first call per shape
    exports or loads the graph). Several segments in a batch run one at a time:
    the graph has a fixed batch of 1, which is also the fastest on a CPU.
    """

    def __init__(self, model: nn.Module, backend: str, threads: int | None = None) -> None:
        if not is_accelerated(backend):
            raise ValueError(backend)
        if not supports_core(model):
            raise BackendUnavailable(f"{type(model).__name__} has no exportable core")
        if not backend_available(backend):
            raise BackendUnavailable(f"{backend} is not installed ({install_hint(backend)})")
        self.model = model
        self.backend = backend
        self.threads = threads or torch.get_num_threads()
        self._runners: dict[tuple, Callable] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        mix: torch.Tensor,
        mag: torch.Tensor,
        should_cancel: Callable[[], bool] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        xs, xts = [], []
        for index in range(mix.shape[0]):
            one_mix = mix[index : index + 1].contiguous()
            one_mag = mag[index : index + 1].contiguous()
            runner = self._runner(one_mix, one_mag)
            x, xt = runner(one_mix.numpy(), one_mag.numpy(), should_cancel)
            xs.append(torch.from_numpy(x))
            xts.append(torch.from_numpy(xt))
        return torch.cat(xs), torch.cat(xts)

    def prepare(self, mix: torch.Tensor, mag: torch.Tensor) -> None:
        """Build the session for this shape now (export or load), e.g. when a server starts."""
        self._runner(mix[:1].contiguous(), mag[:1].contiguous())

    def _runner(self, mix: torch.Tensor, mag: torch.Tensor) -> Callable:
        key = (tuple(mix.shape), tuple(mag.shape))
        with self._lock:
            runner = self._runners.get(key)
            if runner is None:
                path = _cached_onnx(self.model, mix, mag, self.backend)
                if self.backend == "onnxruntime":
                    runner = _ort_runner(path, self.threads)
                else:
                    runner = _openvino_runner(path, self.threads, self.backend)
                self._runners[key] = runner
                _return_freed_memory()
        return runner


def _return_freed_memory() -> None:
    """Give back the gigabytes an export or compile freed.

    Exporting full-size htdemucs peaks at about 5.2 GB and glibc keeps the freed
    pages: measured, a process stayed at 4.5 GB RSS afterwards, 1.1 GB after
    ``malloc_trim``. A resident server must not sit on that.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _ort_runner(path: Path, threads: int) -> Callable:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # No busy-waiting between operators: on a machine shared with a DAW (or other
    # jobs) spinning threads steal the cores; measured 1.41x vs 1.26x over torch
    # with spinning when another process kept one of the two cores busy.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(mix, mag, should_cancel):
        run_options = ort.RunOptions()
        x, xt = _cancellable(
            lambda: session.run(None, {"mix": mix, "mag": mag}, run_options),
            should_cancel,
            lambda: setattr(run_options, "terminate", True),
        )
        return x, xt

    return run


def _openvino_runner(path: Path, threads: int, backend: str) -> Callable:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)),
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[backend],
        },
    )
    _check_precision(compiled.get_property("INFERENCE_PRECISION_HINT"), backend)
    request = compiled.create_infer_request()
    outputs = compiled.outputs

    def run(mix, mag, should_cancel):
        result = _cancellable(
            lambda: request.infer({"mix": mix, "mag": mag}), should_cancel, request.cancel
        )
        return result[outputs[0]].copy(), result[outputs[1]].copy()

    return run


def _check_precision(compiled_precision: Any, backend: str) -> None:
    """Refuse a graph OpenVINO compiled in another precision than ``backend`` promises.

    OpenVINO takes the precision as a hint: where the CPU lacks the arithmetic it
    quietly computes in float32, and a future release could change its defaults.
    """
    asked = _OPENVINO_PRECISION[backend]
    to_string = getattr(compiled_precision, "to_string", None)  # an ov.Type; a str before
    computed = to_string() if to_string else str(compiled_precision)
    if computed != asked:
        raise BackendUnavailable(f"OpenVINO compiled the {backend} core in {computed}, not {asked}")


def _cancellable(
    call: Callable[[], Any], should_cancel: Callable[[], bool] | None, stop: Callable[[], None]
) -> Any:
    """Run a native ``call`` that ``stop`` can abort; a stop becomes :class:`CancelledError`."""
    with _watch_cancel(should_cancel, stop) as hit:
        try:
            result = call()
        except Exception:
            if hit():
                raise CancelledError() from None
            raise
    if hit():
        raise CancelledError()
    return result


@contextlib.contextmanager
def _watch_cancel(
    should_cancel: Callable[[], bool] | None, stop: Callable[[], None]
) -> Iterator[Callable[[], bool]]:
    """Poll ``should_cancel`` from a helper thread while a native call runs; ``stop`` it."""
    if should_cancel is None:
        yield lambda: False
        return
    if should_cancel():
        raise CancelledError()
    done = threading.Event()
    cancelled = threading.Event()

    def watch() -> None:
        while not done.wait(_CANCEL_POLL_S):
            if should_cancel():
                cancelled.set()
                stop()
                return

    thread = threading.Thread(target=watch, name="daw-bridge-cancel", daemon=True)
    thread.start()
    try:
        yield cancelled.is_set
    finally:
        done.set()
        thread.join()
