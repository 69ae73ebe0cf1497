"""The separation worker: one Ray actor per GPU (or per N CPU cores), models kept warm.

A plain class, made a Ray actor by :mod:`daw_bridge.cluster.pool`, so it can be
tested without Ray. It separates mixes it is sent and returns the stems as an
array; it never touches the output folder (the caller delivers, see
:mod:`daw_bridge.cluster.separator`), so a worker killed mid-song cannot leave
half a song anywhere, and Ray may simply run the call again on a restarted
worker.

Calls run in threads of the actor (``max_concurrency``), so ``progress`` and
``cancel`` are answered while ``separate`` runs; separations themselves take
turns (one model run at a time per worker: one GPU, or its share of the cores).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from daw_bridge.errors import CancelledError, DawBridgeError


@dataclass(frozen=True)
class Failure:
    """A :class:`DawBridgeError` raised in a worker, as data: some error classes (e.g.
    :class:`CancelledError`) do not survive pickling, and the fix must reach the user."""

    kind: str
    problem: str
    fix: str | None

    def error(self) -> DawBridgeError:
        """The error to raise in the caller."""
        from daw_bridge import errors

        if self.kind == CancelledError.__name__:
            return CancelledError()
        kind = getattr(errors, self.kind, None)
        if not (isinstance(kind, type) and issubclass(kind, DawBridgeError)):
            kind = DawBridgeError
        return kind(self.problem, self.fix)


def spec_key(spec: dict[str, Any]) -> str:
    """A stable key for a model and its load options (a worker loads each once)."""
    return json.dumps(spec, sort_keys=True, default=str)


class SeparationWorker:
    """Holds loaded separators, keyed by their :func:`spec_key`; separates on request.

    Kept warm between batches where the caller's Ray session outlives one (see
    :class:`~daw_bridge.cluster.pool.WorkerPool`), so nothing of a batch is kept
    here but the loaded models.
    """

    def __init__(self) -> None:
        self._separators: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._progress: dict[str, float] = {}
        self._cancelled: set[str] = set()

    def describe(self, spec: dict[str, Any]) -> dict[str, Any] | Failure:
        """Load the model (once) and say what it gives: name, sources, sample rate."""
        try:
            separator = self._separator(spec)
        except DawBridgeError as error:
            return _failure(error)
        return {
            "name": separator.name,
            "sources": list(separator.sources),
            "samplerate": int(separator.samplerate),
        }

    def separate(
        self, spec: dict[str, Any], request: str, mix: np.ndarray, crash_once: str | None = None
    ) -> np.ndarray | Failure:
        """The stems of ``mix`` (sources, channels, samples), or why not.

        ``crash_once`` is a test hook only (``--ray-test-crash-once``): the path of a
        marker file; the first worker to reach the middle of a separation while it
        does not exist creates it and kills its own process, as a lost node would.
        """
        self._progress[request] = 0.0
        if not mix.flags.writeable:  # Ray hands arguments over read-only; torch wants to own
            mix = mix.copy()
        try:
            separator = self._separator(spec)
            with self._run_lock:
                if request in self._cancelled:
                    raise CancelledError()
                stems = separator.separate(
                    mix,
                    progress=lambda fraction: self._report(request, fraction, crash_once),
                    should_cancel=lambda: request in self._cancelled,
                )
            _maybe_crash(crash_once)  # a model that reported no progress is cut short here
            return np.ascontiguousarray(stems, dtype=np.float32)
        except DawBridgeError as error:
            return _failure(error)
        finally:
            self._progress.pop(request, None)
            self._cancelled.discard(request)

    def progress(self, request: str) -> float:
        """How far the separation ``request`` is (0 when unknown: not started, or done)."""
        return self._progress.get(request, 0.0)

    def cancel(self, request: str) -> None:
        """Stop the separation ``request`` at its next check (it returns a cancel failure);
        one not running (finished, or lost with a restarted worker) is left alone."""
        if request in self._progress:
            self._cancelled.add(request)

    def pid(self) -> int:
        """The worker's process id (tests kill it; logs name it)."""
        return os.getpid()

    def _separator(self, spec: dict[str, Any]):
        from daw_bridge.models.loader import load_separator

        key = spec_key(spec)
        with self._load_lock:
            if key not in self._separators:
                options = dict(spec)
                self._separators[key] = load_separator(options.pop("model"), **options)
            return self._separators[key]

    def _report(self, request: str, fraction: float, crash_once: str | None) -> None:
        self._progress[request] = float(fraction)
        if 0.0 < fraction < 1.0:
            _maybe_crash(crash_once)


def _maybe_crash(marker: str | None) -> None:
    """Test hook: die mid-song, as a lost node does (no clean-up runs), once in all."""
    if marker is None:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(70)


def _failure(error: DawBridgeError) -> Failure:
    return Failure(type(error).__name__, error.problem, error.fix)
