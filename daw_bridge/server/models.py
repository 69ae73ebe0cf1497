"""Separators kept warm, loaded on demand and evicted least-recently-used by memory.

Each loaded model is accounted by the bytes of its weights (tensors counted once).
After a model is loaded, older ones are unloaded while the models' total is above
``memory_limit_bytes``; the models the request asked for always stay. An ensemble's
members are pool entries of their own, shared with requests for them alone, so an
ensemble of ``htdemucs_ft`` and a RoFormer costs no second ``htdemucs_ft``.
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
    from daw_bridge.cluster.pool import WorkerPool
    from daw_bridge.separation.engine import DemucsEngine

log = logging.getLogger(__name__)


def resident_bytes() -> int:
    """This process's resident memory (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def weights_bytes(separator: Separator) -> int:
    """The bytes of the weights a separator holds (Demucs engines' models, an MSST model,
    an ensemble's members), each tensor counted once; 0 for the DSP separator."""
    import torch

    modules: list[torch.nn.Module] = []
    pending: list[object] = [separator]
    while pending:
        item = pending.pop()
        engine = getattr(item, "engine", None)
        modules.extend(getattr(engine, "models", []))
        model = getattr(item, "model", None)
        if isinstance(model, torch.nn.Module):
            modules.append(model)
        pending.extend(getattr(item, "members", {}).values())
    seen: dict[int, int] = {}
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


class ModelPool:
    def __init__(
        self,
        default: str,
        device: str,
        model_dir: Path | None = None,
        memory_limit_bytes: int = 8 * 2**30,
        backend: str | None = None,
        cluster: WorkerPool | None = None,
    ) -> None:
        self.default = default
        #: Where models run when the server forwards jobs to a Ray cluster (``serve --ray``).
        self.cluster = cluster
        self.device = device
        self.backend = backend
        self.model_dir = model_dir
        self.memory_limit_bytes = memory_limit_bytes
        self._loaded: OrderedDict[tuple[str, int], Separator] = OrderedDict()
        self._bytes: dict[tuple[str, int], int] = {}

    def get(self, name: str | None = None, shifts: int = 0) -> Separator:
        """The separator for ``name`` (default: the server's model), warm if it was."""
        from daw_bridge.separation.ensemble import EnsembleSeparator, is_ensemble
        from daw_bridge.separation.ensemble_library import (
            inline_models,
            is_named_ensemble,
            load_ensemble,
        )

        model = name or self.default
        label = None
        if is_named_ensemble(model):  # re-read each time: the file may have been edited
            ensemble = load_ensemble(model)
            model, label = ensemble.spec, ensemble.name
        if not is_ensemble(model):
            return self._one(model, shifts, keep={model})
        members = list(dict.fromkeys(inline_models(model) or []))
        loaded = {member: self._one(member, shifts, keep=set(members)) for member in members}
        return EnsembleSeparator(model, loaded.__getitem__, label)

    def _one(self, name: str, shifts: int, keep: set[str]) -> Separator:
        key = (name, shifts)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            self._evict(keep)  # an ensemble may have left the pool above its limit
            return self._loaded[key]
        load = load_separator if self.cluster is None else self.cluster.separator
        # On a cluster the weights live on its workers: accounted as 0 bytes here.
        separator = load(
            name,
            model_dir=self.model_dir,
            device=self.device,
            shifts=shifts,
            backend=self.backend,
        )
        self._loaded[key] = separator
        self._bytes[key] = weights_bytes(separator)
        self._evict(keep)
        return separator

    def _evict(self, keep: set[str]) -> None:
        while sum(self._bytes.values()) > self.memory_limit_bytes:
            victim = next(
                (key for key in self._loaded if key[0] not in keep and self._bytes[key]), None
            )
            if victim is None:
                return
            del self._loaded[victim], self._bytes[victim]
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
            log.info("unloaded model %s to stay under the memory limit", victim[0])

    def memory(self) -> dict[str, int]:
        """Each loaded model's weights in bytes, least recently used first."""
        totals: dict[str, int] = {}
        for key in self._loaded:
            totals[key[0]] = totals.get(key[0], 0) + self._bytes[key]
        return totals

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
