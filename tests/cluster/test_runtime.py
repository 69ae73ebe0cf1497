"""Sizing the workers to the cluster, and a clear refusal without Ray (no cluster needed)."""

from __future__ import annotations

import sys

import pytest

from daw_bridge.cli import main
from daw_bridge.cluster.runtime import WorkerPlan, import_ray, plan_workers
from daw_bridge.errors import DawBridgeError, InvalidOptionError
from tests.conftest import noise, write_wav


def test_one_worker_per_gpu_unless_the_device_is_cpu():
    resources = {"CPU": 16.0, "GPU": 2.0}
    assert plan_workers(resources) == WorkerPlan(2, 1.0, 1.0)
    assert plan_workers(resources, device="cpu", cpus_per_worker=4) == WorkerPlan(4, 4.0, 0.0)


def test_without_gpus_one_worker_per_n_cores():
    assert plan_workers({"CPU": 8.0}) == WorkerPlan(8, 1.0, 0.0)
    assert plan_workers({"CPU": 8.0}, cpus_per_worker=3) == WorkerPlan(2, 3.0, 0.0)
    assert plan_workers({"CPU": 2.0}, workers=2) == WorkerPlan(2, 1.0, 0.0)


@pytest.mark.parametrize(
    ("resources", "options"),
    [
        ({"CPU": 2.0}, {"workers": 3}),
        ({"CPU": 4.0, "GPU": 1.0}, {"workers": 2}),
        ({"CPU": 2.0}, {"cpus_per_worker": 4}),
        ({"CPU": 2.0}, {"workers": 0}),
        ({"CPU": 2.0}, {"cpus_per_worker": 0}),
    ],
)
def test_more_workers_than_the_cluster_holds_are_refused_not_left_waiting(resources, options):
    with pytest.raises(InvalidOptionError) as caught:
        plan_workers(resources, **options)
    assert caught.value.fix


def test_without_ray_the_error_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(DawBridgeError) as caught:
        import_ray()
    assert "daw-bridge[cluster]" in caught.value.fix


def test_batch_with_ray_but_no_ray_fails_before_any_song(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    write_wav(tmp_path / "song.wav", noise(seconds=0.2))
    argv = ["batch", str(tmp_path / "song.wav"), "--out", str(tmp_path / "out"), "--model", "dsp"]
    assert main([*argv, "--ray", "local", "-q"]) == 2
    assert "daw-bridge[cluster]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
