"""The separation worker as a plain object (no Ray): what it answers, how it fails."""

from __future__ import annotations

import os

import numpy as np
import pytest

from daw_bridge.cluster.worker import Failure, SeparationWorker, spec_key
from daw_bridge.errors import CancelledError, DawBridgeError, ModelUnavailableError
from daw_bridge.separation.dsp import DspSeparator
from tests.conftest import noise


def test_describes_and_separates_as_the_model_does_in_process():
    worker = SeparationWorker()
    assert worker.describe({"model": "dsp"}) == {
        "name": "dsp",
        "sources": list(DspSeparator().sources),
        "samplerate": DspSeparator().samplerate,
    }
    mix = noise(seconds=1.0, seed=4)
    mix.setflags(write=False)  # as Ray hands arguments over
    stems = worker.separate({"model": "dsp"}, "r1", mix)
    np.testing.assert_array_equal(stems, DspSeparator().separate(noise(seconds=1.0, seed=4)))


def test_loads_each_model_once_and_keeps_it(monkeypatch):
    from daw_bridge.models import loader

    loads = []
    real = loader.load_separator
    monkeypatch.setattr(loader, "load_separator", lambda *a, **k: loads.append(a) or real(*a, **k))
    worker = SeparationWorker()
    for request in ("a", "b", "c"):
        worker.separate({"model": "dsp", "shifts": 0}, request, noise(seconds=0.2))
    worker.describe({"shifts": 0, "model": "dsp"})  # the same spec, in another order
    assert loads == [("dsp",)]
    assert spec_key({"model": "dsp", "shifts": 0}) == spec_key({"shifts": 0, "model": "dsp"})


def test_a_model_that_cannot_load_comes_back_as_its_error_with_the_fix(tmp_path):
    answer = SeparationWorker().describe({"model": str(tmp_path / "missing.th")})
    assert isinstance(answer, Failure)
    error = answer.error()
    assert isinstance(error, ModelUnavailableError)
    assert "not found" in error.problem and error.fix


def test_a_failure_of_an_unknown_kind_is_still_a_daw_bridge_error():
    error = Failure("SomethingElse", "it broke", "do this").error()
    assert type(error) is DawBridgeError and (error.problem, error.fix) == ("it broke", "do this")
    assert isinstance(Failure("CancelledError", "", None).error(), CancelledError)


class _Slow:
    """A model that asks whether it is cancelled after its caller cancelled it."""

    name, sources, samplerate = "slow", ("a", "b"), 44100

    def __init__(self, worker: SeparationWorker, request: str) -> None:
        self.worker, self.request = worker, request

    def separate(self, mix, progress=None, should_cancel=None):
        self.worker.cancel(self.request)  # as the caller does from its thread
        if should_cancel():
            raise CancelledError()
        return np.stack([mix, mix])


def test_cancel_stops_the_running_separation_and_is_forgotten_after(monkeypatch):
    worker = SeparationWorker()
    monkeypatch.setattr(worker, "_separator", lambda spec: _Slow(worker, "r1"))
    answer = worker.separate({"model": "slow"}, "r1", noise(seconds=0.1))
    assert isinstance(answer, Failure) and isinstance(answer.error(), CancelledError)
    worker.cancel("r1")  # no longer running: nothing is kept for it
    assert worker._cancelled == set() and worker.progress("r1") == 0.0


class _Died(BaseException):
    pass


def test_the_crash_hook_kills_only_the_first_worker_to_reach_mid_song(tmp_path, monkeypatch):
    """Test-only hook (``--ray-test-crash-once``): one death in all, whichever worker."""

    def exit_(code):
        raise _Died(code)

    monkeypatch.setattr(os, "_exit", exit_)
    marker = tmp_path / "crashed"
    first, second = SeparationWorker(), SeparationWorker()
    with pytest.raises(_Died):
        first.separate({"model": "dsp"}, "r1", noise(seconds=0.5), crash_once=str(marker))
    assert marker.exists()
    for worker, request in ((second, "r2"), (first, "r3")):
        stems = worker.separate({"model": "dsp"}, request, noise(seconds=0.5), str(marker))
        assert stems.shape[0] == 4
