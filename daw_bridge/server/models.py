"""Separators kept warm, loaded on demand and evicted least-recently-used by memory.

After a model is loaded, older ones are unloaded while the server's resident
memory is above ``memory_limit_bytes`` (the model just asked for always stays).
"""

from __future__ import annotations

import gc
import logging
import os
import resource
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from daw_bridge.models.loader import load_separator
from daw_bridge.separation.base import Separator

if TYPE_CHECKING:
    from daw_bridge.separation.engine import DemucsEngine

log = logging.getLogger(__name__)


def resident_bytes() -> int:
    """This process's resident memory (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ModelPool:
    def __init__(
        self,
        default: str,
        device: str,
        model_dir: Path | None = None,
        memory_limit_bytes: int = 8 * 2**30,
        backend: str | None = None,
    ) -> None:
        self.default = default
        self.device = device
        self.backend = backend
        self.model_dir = model_dir
        self.memory_limit_bytes = memory_limit_bytes
        self._loaded: OrderedDict[tuple[str, int], Separator] = OrderedDict()

    def get(self, name: str | None = None, shifts: int = 0) -> Separator:
        key = (name or self.default, shifts)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        separator = load_separator(
            key[0],
            model_dir=self.model_dir,
            device=self.device,
            shifts=shifts,
            backend=self.backend,
        )
        self._loaded[key] = separator
        self._evict()
        return separator

    def _evict(self) -> None:
        while len(self._loaded) > 1 and resident_bytes() > self.memory_limit_bytes:
            evicted, _ = self._loaded.popitem(last=False)
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
            log.info("unloaded model %s to stay under the memory limit", evicted[0])

    def loaded(self) -> list[str]:
        return [name for name, _ in self._loaded]

    def device_name(self) -> str:
        engine = self._an_engine()
        return str(engine.device) if engine is not None else "cpu"

    def backend_name(self) -> str | None:
        """How the neural models run (``openvino``, ``torch``, ...); None before one loads."""
        engine = self._an_engine()
        return engine.backend if engine is not None else None

    def _an_engine(self) -> DemucsEngine | None:
        for separator in self._loaded.values():
            engine = getattr(separator, "engine", None)
            if engine is not None:
                return engine
        return None
