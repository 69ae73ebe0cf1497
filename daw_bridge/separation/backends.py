"""Names of the ways HTDemucs can run on the CPU, and what each needs installed.

Kept free of torch so the command line can offer the choices without loading it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache

from daw_bridge.errors import InvalidOptionError


@dataclass(frozen=True)
class ReducedPrecision:
    """An opt-in OpenVINO backend that computes in fewer bits where the CPU has them."""

    openvino_type: str  #: what OpenVINO's ``INFERENCE_PRECISION_HINT`` is given
    capability: str  #: the name OpenVINO lists in the CPU's ``OPTIMIZATION_CAPABILITIES``
    arithmetic: str  #: for messages: the number format
    hardware: str  #: for messages: the instructions that compute it


#: Both are opt-in and run only where the CPU computes the format (elsewhere OpenVINO
#: would quietly stay in float32). ``openvino-bf16`` is 1.8x faster on an AMX Xeon but
#: moved single stems by up to -46 dB of their own energy (random weights, 38 songs,
#: 2026-11-27), outside the -50 dB a default may cost (``benchmarks/precision.py``; the
#: README's Precision section). ``openvino-f16`` (11 bits of mantissa to bfloat16's 8)
#: met that bound as CUDA float16 autocast (-58 dB on trained weights), but OpenVINO's
#: float16 is not autocast: on a Xeon with AVX-512 FP16 it overflowed to NaN on every
#: stem of trained weights (2026-11-27). The likely cause, the inputs' standard deviation
#: inside the exported core (it divides by 2.75 million, beyond float16's 65504), now
#: runs in PyTorch's float32 (``htcore``), but the fix is not yet measured on such a
#: CPU; a NaN output stops the job with an error. Neither is picked by ``auto``.
REDUCED_PRECISION = {
    "openvino-bf16": ReducedPrecision("bf16", "BF16", "bfloat16", "AMX or AVX-512 BF16"),
    "openvino-f16": ReducedPrecision("f16", "FP16", "float16", "AVX-512 FP16 or AVX2-VNNI-2"),
}
BACKENDS = ("auto", "torch", "onnxruntime", "openvino", *REDUCED_PRECISION)
#: The CPU backend ``auto`` picks when it is installed.
DEFAULT_CPU_BACKEND = "openvino"
#: Environment variable choosing the backend when the caller does not.
BACKEND_ENV = "DAW_BRIDGE_BACKEND"

#: What each accelerated backend needs installed (the export needs ``onnx`` too).
_INSTALL = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "onnx"),
    **{backend: ("openvino", "onnx") for backend in REDUCED_PRECISION},
}


def is_accelerated(backend: str) -> bool:
    """Whether ``backend`` runs the exported network core (not eager PyTorch)."""
    return backend in _INSTALL


def backend_available(backend: str) -> bool:
    return all(importlib.util.find_spec(name) for name in _INSTALL.get(backend, ()))


def install_hint(backend: str) -> str:
    """The command that installs what ``backend`` needs."""
    return "python3 -m pip install " + " ".join(_INSTALL.get(backend, (backend,)))


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise InvalidOptionError(
            f"Unknown backend {backend!r}.", f"Use one of {', '.join(BACKENDS)}."
        )


def cpu_computes(backend: str) -> bool:
    """Whether this CPU computes ``backend``'s reduced precision natively, per OpenVINO.

    Elsewhere OpenVINO silently keeps float32 under such a request, so asking for
    it there would only pretend to be a different path.
    """
    return REDUCED_PRECISION[backend].capability in _cpu_capabilities()


@cache
def _cpu_capabilities() -> tuple[str, ...]:
    if not backend_available("openvino"):
        return ()
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
