"""``serve --ray``: the DAW's ZeroMQ link stays the same, the separations run on the
cluster's workers (the model pool hands out RaySeparators)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import ServerProcess, noise, write_wav


@pytest.fixture(scope="module")
def workers(ray_cluster):
    from daw_bridge.cluster.pool import WorkerPool
    from daw_bridge.cluster.runtime import WorkerPlan

    return WorkerPool(ray_cluster, WorkerPlan(2, 1.0, 0.0), keep=True)


def test_the_servers_model_pool_hands_out_models_on_the_cluster(workers, tiny_checkpoint):
    from daw_bridge.cluster.separator import RaySeparator
    from daw_bridge.server.models import ModelPool

    pool = ModelPool(str(tiny_checkpoint), "cpu", cluster=workers)
    separator = pool.get()
    assert isinstance(separator, RaySeparator)
    assert pool.get() is separator  # warm: asked of the workers once
    ensemble = pool.get(f"vocals={tiny_checkpoint},drums=dsp,bass=dsp,other=dsp")
    assert ensemble.members[str(tiny_checkpoint)] is separator
    assert pool.memory()[str(tiny_checkpoint)] == 0  # the weights live on the workers


def test_a_server_started_with_ray_splits_a_clients_job_on_the_cluster(
    tmp_path, tiny_checkpoint, ray_cluster
):
    """A real `daw-bridge serve --ray local` (its own one-core Ray instance) and a client:
    the stems equal those of a server that separates itself."""
    import soundfile

    from daw_bridge.client.client import Client

    song = write_wav(tmp_path / "song.wav", noise(seconds=2.0, seed=11))
    stems = {}
    for label, extra in (
        ("ray", ("--ray", "local", "--ray-local-cpus", "1", "--ray-workers", "1")),
        ("plain", ()),
    ):
        server = ServerProcess(tiny_checkpoint, tmp_path / f"state-{label}", *extra)
        try:
            with Client(server.address, timeout=120) as client:
                workers = client.status()["cluster_workers"]
                assert workers == (1 if label == "ray" else None)
                job = client.submit(song, tmp_path / label)
                final = client.wait(job)
            assert final["state"] == "done", final
            stems[label] = final["result"]["stems"]
        finally:
            server.kill()
    for name, path in stems["ray"].items():
        ours = soundfile.read(path, dtype="float32")[0]
        theirs = soundfile.read(stems["plain"][name], dtype="float32")[0]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
