"""Separation workers on a Ray cluster, lent to one caller at a time.

Ray places the workers (one per GPU, or per N cores), restarts a worker whose
process dies (``max_restarts``) and runs the call it was in again on the new one
(``max_task_retries``). What is left here is only the lending: each caller (a
song of a batch, a server job) takes an idle worker and gives it back, so a
worker runs one song at a time and a free one takes the next. Ray's own
``ActorPool`` is not used because it is not thread-safe and hands results back
in its own order, while each caller here waits for its own song.

Workers are ended after the batch when this run started Ray. In a Ray session
that outlives the run (a notebook, a test session, a server), they stay, named
and held here (Ray ends an actor nobody holds), and the next pool of the same
shape in this process finds them warm.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from daw_bridge.cluster.runtime import WorkerPlan
from daw_bridge.cluster.worker import Failure, SeparationWorker
from daw_bridge.errors import CancelledError, DawBridgeError

log = logging.getLogger(__name__)

#: How often a caller waiting for a worker or a song looks at its cancel flag.
POLL_SECONDS = 0.2
#: Restarts of a worker whose process died, and retries of the call it was in.
RETRIES = 3
#: Workers kept warm for the next pool, by Ray job and name.
_KEPT: dict[str, Any] = {}


class WorkerPool:
    """``plan.count`` warm :class:`SeparationWorker` actors on the cluster ``ray``; with
    ``keep``, named ones that outlive the pool (and are found again by the next)."""

    def __init__(
        self,
        ray: ModuleType,
        plan: WorkerPlan,
        *,
        retries: int = RETRIES,
        keep: bool = False,
        crash_once: str | None = None,
    ) -> None:
        self.ray = ray
        self.plan = plan
        self.keep = keep
        #: Test hook only (``--ray-test-crash-once``), see :class:`SeparationWorker`.
        self.crash_once = crash_once
        options: dict[str, Any] = {
            "num_cpus": plan.num_cpus,
            "num_gpus": plan.num_gpus,
            "max_restarts": retries,
            "max_task_retries": retries,
            "max_concurrency": 4,  # progress and cancel are answered while a song runs
        }
        actor = ray.remote(SeparationWorker)
        if keep:
            job = ray.get_runtime_context().get_job_id()
            shape = f"{plan.num_cpus:g}cpu-{plan.num_gpus:g}gpu"
            self._names = [f"{job}/daw-bridge-{shape}-{i}" for i in range(plan.count)]
            for name in self._names:
                if name not in _KEPT:
                    named = actor.options(**options, name=name.split("/")[1], get_if_exists=True)
                    _KEPT[name] = named.remote()
            self.actors = [_KEPT[name] for name in self._names]
        else:
            self._names = []
            self.actors = [actor.options(**options).remote() for _ in range(plan.count)]
        self._idle: queue.Queue[Any] = queue.Queue()
        for handle in self.actors:
            self._idle.put(handle)
        self._alive = len(self.actors)
        self._closed = threading.Event()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.plan.count

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def separator(self, model: str, **options: Any):
        """A :class:`~daw_bridge.cluster.separator.RaySeparator` for ``model``, loaded with
        ``options`` (those of :func:`~daw_bridge.models.loader.load_separator`) on every
        worker now, so the first song finds it warm everywhere."""
        from daw_bridge.cluster.separator import RaySeparator

        spec = {"model": model, **{k: _plain(v) for k, v in options.items() if v is not None}}
        described = self.get([handle.describe.remote(spec) for handle in self.actors])
        for answer in described:
            if isinstance(answer, Failure):
                raise answer.error()
        return RaySeparator(self, spec, **described[0])

    @contextlib.contextmanager
    def lease(self, should_cancel: Callable[[], bool] | None = None) -> Iterator[Any]:
        """An idle worker for the time of one separation."""
        while True:
            if self.closed or (should_cancel is not None and should_cancel()):
                raise CancelledError()
            with self._lock:
                if not self._alive:
                    raise DawBridgeError(
                        "Every Ray separation worker died, each more often than Ray restarts "
                        f"one ({RETRIES} times).",
                        "See the workers' logs (`ray logs`, or /tmp/ray/session_latest/logs) "
                        "for why, e.g. out of memory.",
                    )
            try:
                handle = self._idle.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            break
        dead = False
        try:
            yield handle
        except self.ray.exceptions.RayActorError:
            dead = True
            raise
        finally:
            if dead:
                with self._lock:
                    self._alive -= 1
                for name in self._names:  # the next pool makes a new one
                    if _KEPT.get(name) is handle:
                        del _KEPT[name]
            else:
                self._idle.put(handle)

    def get(self, refs: list[Any]) -> list[Any]:
        """``ray.get``, with a worker's own error raised as itself (not Ray's wrapper)."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, Exception):
                raise cause from error
            raise

    def close(self) -> None:
        """Stop lending: callers waiting for a worker, and songs running, end cancelled."""
        self._closed.set()

    def shutdown(self) -> None:
        """:meth:`close`, and end the workers (their models go with them) unless kept."""
        self.close()
        if self.keep:
            return
        for handle in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(handle, no_restart=True)


def _plain(value: Any) -> Any:
    """Paths as text: the workers may run elsewhere, and the spec is a cache key there."""
    from pathlib import PurePath

    return str(value) if isinstance(value, PurePath) else value
