"""A separator whose model runs on a Ray worker: the hook for ``batch --ray`` and ``serve``.

:class:`RaySeparator` keeps the :class:`~daw_bridge.separation.base.Separator`
contract (``name``, ``sources``, ``samplerate``, ``separate(mix, progress,
should_cancel)``), so everything around the model stays where it is: the batch
and the server read the song, resample it, and deliver the stems all or nothing
through :mod:`daw_bridge.delivery` in their own process. Only the mix (at the
model's rate) goes to the cluster and only the stems come back, as arrays
through Ray's object store.

Why the caller writes, not the worker: the output folder need not be shared
with the cluster (a laptop's project folder, a ``ray://`` cluster elsewhere);
the delivery's staging folder, journal and undo work by renames in one folder
and by whether the writing process still lives, which only holds on the machine
that writes; and a worker that dies mid-song has written nothing at all, so
Ray may simply run the song again on a restarted worker. The price: the mix
and its stems cross the network (a 4-minute stereo song at 44.1 kHz: 85 MB
out, 340 MB back for 4 stems) and the whole song is in the caller's memory
(the in-process path streams long files in blocks).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from daw_bridge.cluster.worker import Failure
from daw_bridge.errors import CancelledError, DawBridgeError
from daw_bridge.separation.base import CancelCheck, ProgressCallback

if TYPE_CHECKING:
    from daw_bridge.cluster.pool import WorkerPool

#: How often a running song's progress is asked for, in seconds.
PROGRESS_SECONDS = 0.5


class RaySeparator:
    """``model`` (``spec``: it and its load options) on the workers of ``pool``."""

    def __init__(
        self,
        pool: WorkerPool,
        spec: dict[str, Any],
        *,
        name: str,
        sources: list[str],
        samplerate: int,
    ) -> None:
        self.pool = pool
        self.spec = spec
        self.name = name
        self.sources = tuple(sources)
        self.samplerate = samplerate

    def separate(
        self,
        mix: np.ndarray,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> np.ndarray:
        """Split ``mix`` (channels, samples) into (sources, channels, samples) on a worker.

        Waits for an idle worker first. ``should_cancel`` (or the pool closing) stops
        the worker's run at its next check and raises :class:`CancelledError`.
        """
        ray = self.pool.ray
        mix = np.ascontiguousarray(mix, dtype=np.float32)
        try:
            stems = self._run(ray, mix, progress, should_cancel)
        except ray.exceptions.RayActorError as error:
            raise DawBridgeError(
                "The Ray worker separating this song died, each time Ray restarted it "
                f"({error.__class__.__name__}); nothing of the song was written.",
                "See the workers' logs (`ray logs`, or /tmp/ray/session_latest/logs) for why "
                "(out of memory is the usual cause), then run the same command again.",
            ) from error
        if isinstance(stems, Failure):
            raise stems.error()
        if not isinstance(stems, np.ndarray):
            raise DawBridgeError(f"A Ray worker sent {type(stems).__name__}, not stems.")
        if self.pool.closed:
            raise CancelledError()
        if progress is not None:
            progress(1.0)
        return np.array(stems)  # a writable copy; the object store's one is read-only

    def _run(
        self,
        ray: Any,
        mix: np.ndarray,
        progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
    ) -> Any:
        """The worker's answer: stems, or a :class:`Failure`."""
        from daw_bridge.cluster.pool import POLL_SECONDS

        with self.pool.lease(should_cancel) as worker:
            request = uuid.uuid4().hex
            done = worker.separate.remote(self.spec, request, mix, self.pool.crash_once)
            asked, waited, shown = None, 0.0, 0.0
            while not ray.wait([done], timeout=POLL_SECONDS)[0]:
                waited += POLL_SECONDS
                if self.pool.closed or (should_cancel is not None and should_cancel()):
                    worker.cancel.remote(request)  # again each time: a restarted worker forgot
                if progress is None:
                    continue
                if asked is not None and ray.wait([asked], timeout=0)[0]:
                    with contextlib.suppress(ray.exceptions.RayError):  # being restarted
                        fraction = float(ray.get(asked))
                        if fraction > shown:  # a restarted worker starts again from 0
                            shown = fraction
                            progress(fraction)
                    asked = None
                if asked is None and waited >= PROGRESS_SECONDS:
                    asked, waited = worker.progress.remote(request), 0.0
            return self.pool.get([done])[0]

    def __repr__(self) -> str:
        return f"RaySeparator({self.name!r} on {self.pool.plan.describe()})"
