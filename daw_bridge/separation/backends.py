"""Names of the ways HTDemucs can run on the CPU, and what each needs installed.

Kept free of torch so the command line can offer the choices without loading it.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from daw_bridge.errors import InvalidOptionError

#: ``openvino-bf16`` is opt-in: it only runs on CPUs with AMX or AVX-512 BF16, where it
#: is 1.8x faster, but it moved single stems by up to -46 dB of their own energy (random
#: weights, 38 songs, 2026-11-27), outside the -50 dB a default may cost
#: (``benchmarks/precision.py``; the README's Performance section).
BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "openvino-bf16")
#: The CPU backend ``auto`` picks when it is installed.
DEFAULT_CPU_BACKEND = "openvino"
#: Environment variable choosing the backend when the caller does not.
BACKEND_ENV = "DAW_BRIDGE_BACKEND"

#: What each accelerated backend needs installed (the export needs ``onnx`` too).
_INSTALL = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "onnx"),
    "openvino-bf16": ("openvino", "onnx"),
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


@cache
def cpu_accelerates_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16), per OpenVINO.

    Elsewhere OpenVINO silently keeps float32 under a bf16 request, so asking
    for bf16 there would only pretend to be a different path.
    """
    if not backend_available("openvino"):
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
