"""RaySeparator: the Separator contract with the model on a Ray worker (the ``serve`` hook).

Two one-core workers on the package's local cluster; the tiny checkpoint keeps
each separation in the tens of milliseconds.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from daw_bridge.errors import CancelledError, ModelUnavailableError
from tests.conftest import noise, write_wav


@pytest.fixture(scope="module")
def pool(ray_cluster):
    from daw_bridge.cluster.pool import WorkerPool
    from daw_bridge.cluster.runtime import WorkerPlan

    # Kept: the batch tests' runs find these two workers warm (same shape, same session).
    return WorkerPool(ray_cluster, WorkerPlan(2, 1.0, 0.0), keep=True)


@pytest.fixture(scope="module")
def remote(pool, tiny_checkpoint):
    return pool.separator(str(tiny_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def local(tiny_checkpoint):
    from daw_bridge.models.loader import load_separator

    return load_separator(str(tiny_checkpoint), device="cpu")


def test_it_names_the_model_as_the_local_one_does(remote, local):
    assert (remote.name, remote.sources, remote.samplerate) == (
        local.name,
        tuple(local.sources),
        local.samplerate,
    )


def test_stems_equal_the_local_models_and_progress_ends_at_one(remote, local):
    mix = noise(seconds=3.0, seed=5)
    reported: list[float] = []
    stems = remote.separate(mix, progress=reported.append)
    expected = local.separate(mix)
    assert stems.shape == expected.shape and stems.flags.writeable
    np.testing.assert_allclose(stems, expected, rtol=0, atol=1e-6)  # 1 vs 2 threads' rounding
    assert reported[-1] == 1.0 and reported == sorted(reported)


def test_songs_at_once_each_get_their_own_stems(remote, local):
    mixes = [noise(seconds=1.5, seed=seed) for seed in range(4)]
    results: dict[int, np.ndarray] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, remote.separate(mixes[i])))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, mix in enumerate(mixes):
        np.testing.assert_allclose(results[i], local.separate(mix), rtol=0, atol=1e-6)


def test_cancel_stops_the_song_on_its_worker_and_the_worker_serves_the_next(remote):
    asked = []

    def should_cancel() -> bool:
        asked.append(1)
        return len(asked) > 1  # not before it is running on a worker

    with pytest.raises(CancelledError):
        remote.separate(noise(seconds=60.0, seed=6), should_cancel=should_cancel)
    assert remote.separate(noise(seconds=0.5)).shape[0] == 4  # both workers lent again


def test_a_model_the_workers_cannot_load_fails_with_its_own_error(pool, tmp_path):
    with pytest.raises(ModelUnavailableError) as caught:
        pool.separator(str(tmp_path / "nowhere.th"))
    assert caught.value.fix


def test_the_servers_split_path_gives_the_stems_split_gives(remote, local, tmp_path):
    """What the server's worker runs on a job (``split_span``) with the RaySeparator in
    place of the local model; ``ModelPool.get`` hands it out (see the cluster README)."""
    import soundfile

    from daw_bridge.audio.io import read_span
    from daw_bridge.separation.pipeline import split_span

    song = write_wav(tmp_path / "song.wav", noise(seconds=2.0, seed=7))
    done = {}
    for label, separator in (("ray", remote), ("local", local)):
        done[label] = split_span(read_span(song), separator, tmp_path / label)
    for name, path in done["ray"].stems.items():
        ours = soundfile.read(path, dtype="float32")[0]
        theirs = soundfile.read(done["local"].stems[name], dtype="float32")[0]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
