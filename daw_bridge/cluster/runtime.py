"""Joining (or starting) a Ray cluster, and how many workers it can hold.

``ADDRESS`` is what ``--ray`` takes: ``local`` starts a Ray instance on this
machine for the run (and stops it after), ``auto`` joins the cluster started
here with ``ray start``, ``ray://host:10001`` a remote one through Ray Client
(``pip install "ray[client]"``), and ``host:6379`` a cluster's head node. A
process that already called ``ray.init`` keeps its cluster as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from daw_bridge.errors import DawBridgeError, InvalidOptionError

LOCAL = "local"


def import_ray() -> ModuleType:
    """Ray, or an error that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise DawBridgeError(
            f"--ray needs Ray, which is not installed here ({error}).",
            'Install it with: python3 -m pip install "daw-bridge[cluster]"',
        ) from error
    return ray


@dataclass(frozen=True)
class Session:
    """Ray, initialised; ``owned`` when this run started the session (and ends it)."""

    ray: ModuleType
    owned: bool


@contextmanager
def connect(
    address: str,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    verbose: bool = False,
) -> Iterator[Session]:
    """Ray, initialised for ``address``; shut down on leaving if this call started it.

    ``num_cpus`` and ``object_store_memory`` size a ``local`` instance only.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield Session(ray, owned=False)
        return
    options: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": verbose,
    }
    if address == LOCAL:
        options.update(
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            include_dashboard=False,
            # This checkout's daw_bridge for the workers, installed or not.
            runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}},
        )
    try:
        ray.init(None if address == LOCAL else address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise DawBridgeError(
            f"Could not reach the Ray cluster at {address!r} ({error}).",
            "Check the address (auto, ray://HOST:10001 or HOST:6379) and that the cluster "
            "runs (`ray status`), or use --ray local to start one on this machine.",
        ) from error
    try:
        yield Session(ray, owned=True)
    finally:
        ray.shutdown()


def _pythonpath() -> str:
    here = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return os.pathsep.join([here, rest]) if rest else here


@dataclass(frozen=True)
class WorkerPlan:
    """How many separation workers, and what each one holds of the cluster."""

    count: int
    num_cpus: float
    num_gpus: float

    def describe(self) -> str:
        each = f"1 GPU + {self.num_cpus:g} CPU" if self.num_gpus else f"{self.num_cpus:g} CPU"
        return f"{self.count} worker{'s' if self.count != 1 else ''} ({each} each)"


def plan_workers(
    resources: dict[str, float],
    *,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    device: str = "auto",
) -> WorkerPlan:
    """One worker per GPU (unless ``device`` is cpu), else one per ``cpus_per_worker``
    cores; ``workers`` asks for a number, refused if the cluster cannot hold them now
    (they would wait forever for a free GPU or core)."""
    if workers is not None and workers < 1:
        raise InvalidOptionError(f"--ray-workers {workers}: at least 1.", "Give 1 or more.")
    if cpus_per_worker < 1:
        raise InvalidOptionError(
            f"--ray-cpus-per-worker {cpus_per_worker}: at least 1.", "Give 1 or more."
        )
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    if gpus and device != "cpu":
        plan = WorkerPlan(workers or gpus, 1.0, 1.0)
        fits = plan.count <= gpus and plan.count <= cpus
        where = f"{gpus} GPU(s) and {cpus:g} CPU(s)"
    else:
        count = workers or max(1, int(cpus // cpus_per_worker))
        plan = WorkerPlan(count, float(cpus_per_worker), 0.0)
        fits = plan.count * plan.num_cpus <= cpus
        where = f"{cpus:g} CPU(s) and no GPU for them"
    if not fits:
        raise InvalidOptionError(
            f"The Ray cluster has {where}: not enough for {plan.describe()}.",
            "Ask for fewer --ray-workers (or fewer --ray-cpus-per-worker), or add nodes.",
        )
    return plan
