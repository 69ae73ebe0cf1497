"""A small local Ray cluster shared by the tests of this folder (Ray starts in ~10 s).

Skipped, with the reason, where Ray is not installed (it is the optional
``daw-bridge[cluster]`` extra) or cannot start here.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

#: Small: two one-core workers, and a store that holds a few short songs.
CPUS = 2
STORE_BYTES = 200 * 2**20


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[ModuleType]:
    pytest.importorskip("ray", reason='Ray is an optional extra: pip install "daw-bridge[cluster]"')
    from daw_bridge.cluster.runtime import connect

    try:
        context = connect("local", num_cpus=CPUS, object_store_memory=STORE_BYTES)
        ray = context.__enter__().ray
    except Exception as error:  # no /dev/shm, no free ports, a sandbox: Ray says which
        pytest.skip(f"a local Ray cluster cannot start here: {error}")
    try:
        yield ray
    finally:
        context.__exit__(None, None, None)
