"""The ``--ray`` options, and the worker pool they ask for (``batch`` and ``serve``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daw_bridge.cluster.pool import WorkerPool


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--ray`` and its sizing options (for ``batch`` and ``serve``)."""
    group = parser.add_argument_group('Ray cluster (pip install "daw-bridge[cluster]")')
    group.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="separate on a Ray cluster: local (start one on this machine), auto (the one "
        "`ray start` runs here), ray://HOST:10001 or HOST:6379; stems are written here",
    )
    group.add_argument(
        "--ray-workers",
        type=int,
        metavar="N",
        help="separation workers, each with the model loaded (default: one per GPU, else "
        "one per --ray-cpus-per-worker cores)",
    )
    group.add_argument(
        "--ray-cpus-per-worker",
        type=int,
        default=1,
        metavar="N",
        help="cores per worker when the cluster has no GPU (default 1)",
    )
    group.add_argument(
        "--ray-local-cpus",
        type=int,
        metavar="N",
        help="cores a --ray local instance may use (default: all)",
    )
    # Test hook only: the first worker to reach the middle of a song dies (os._exit).
    group.add_argument("--ray-test-crash-once", metavar="MARKER", help=argparse.SUPPRESS)


@contextmanager
def open_pool(args: argparse.Namespace) -> Iterator[WorkerPool]:
    """The Ray session and the warm workers ``args`` ask for, ended on leaving (the workers
    stay when the Ray session was this process's before: see :class:`WorkerPool`)."""
    from daw_bridge.cluster.pool import WorkerPool
    from daw_bridge.cluster.runtime import connect, plan_workers

    verbose = bool(getattr(args, "verbose", False))
    with connect(args.ray, num_cpus=args.ray_local_cpus, verbose=verbose) as session:
        plan = plan_workers(
            session.ray.cluster_resources(),
            workers=args.ray_workers,
            cpus_per_worker=args.ray_cpus_per_worker,
            device=args.device,
        )
        crash_once = getattr(args, "ray_test_crash_once", None)
        pool = WorkerPool(session.ray, plan, keep=not session.owned, crash_once=crash_once)
        try:
            yield pool
        finally:
            pool.shutdown()
