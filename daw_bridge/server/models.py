"""Separators kept warm, loaded on demand and evicted least-recently-used."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

from daw_bridge.models.loader import load_separator
from daw_bridge.separation.base import Separator

log = logging.getLogger(__name__)


class ModelPool:
    """Holds at most ``capacity`` loaded models; the default one is loaded at start."""

    def __init__(
        self, default: str, device: str, model_dir: Path | None = None, capacity: int = 2
    ) -> None:
        self.default = default
        self.device = device
        self.model_dir = model_dir
        self.capacity = max(1, capacity)
        self._loaded: OrderedDict[tuple[str, int], Separator] = OrderedDict()

    def get(self, name: str | None = None, shifts: int = 0) -> Separator:
        key = (name or self.default, shifts)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        separator = load_separator(
            key[0], model_dir=self.model_dir, device=self.device, shifts=shifts
        )
        self._loaded[key] = separator
        while len(self._loaded) > self.capacity:
            evicted, _ = self._loaded.popitem(last=False)
            log.info("unloaded model %s to make room", evicted[0])
        return separator

    def loaded(self) -> list[str]:
        return [name for name, _ in self._loaded]

    def device_name(self) -> str:
        for separator in self._loaded.values():
            engine = getattr(separator, "engine", None)
            if engine is not None:
                return str(engine.device)
        return "cpu"
