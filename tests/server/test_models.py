"""The model pool keeps the default warm and unloads others by memory."""

from __future__ import annotations

import pytest

from daw_bridge.server.models import ModelPool, weights_bytes
from tests.conftest import save_checkpoint, tiny_htdemucs


def test_models_load_on_demand_and_stay_while_memory_allows(tiny_checkpoint):
    pool = ModelPool(str(tiny_checkpoint), "cpu", memory_limit_bytes=1 << 50)
    first = pool.get()
    assert pool.get("dsp").name == "dsp"
    assert pool.get() is first  # still warm, not reloaded
    assert pool.loaded() == ["dsp", str(tiny_checkpoint)]


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory):
    return save_checkpoint(tiny_htdemucs(), tmp_path_factory.mktemp("second"), "5ec0d0de")


def test_each_model_is_accounted_by_the_bytes_of_its_weights(tiny_checkpoint):
    pool = ModelPool(str(tiny_checkpoint), "cpu", memory_limit_bytes=1 << 50)
    model = pool.get().engine.models[0]
    expected = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    pool.get("dsp")
    assert pool.memory() == {str(tiny_checkpoint): expected, "dsp": 0}
    assert expected > 0


def test_least_recently_used_model_is_unloaded_above_the_memory_limit(
    tiny_checkpoint, second_checkpoint
):
    one_model = weights_bytes(ModelPool(str(tiny_checkpoint), "cpu").get())
    pool = ModelPool(str(tiny_checkpoint), "cpu", memory_limit_bytes=one_model * 3 // 2)
    pool.get()
    pool.get("dsp")  # weightless: nothing to unload for it
    assert pool.loaded() == [str(tiny_checkpoint), "dsp"]
    pool.get(str(second_checkpoint))
    assert pool.loaded() == ["dsp", str(second_checkpoint)]  # the one just asked for stays
    assert pool.get().name == tiny_checkpoint.stem
    assert pool.loaded() == ["dsp", str(tiny_checkpoint)]


def test_an_ensembles_models_are_shared_with_the_pool_and_all_stay_while_it_runs(
    tiny_checkpoint, second_checkpoint
):
    one_model = weights_bytes(ModelPool(str(tiny_checkpoint), "cpu").get())
    pool = ModelPool(str(tiny_checkpoint), "cpu", memory_limit_bytes=one_model)
    alone = pool.get()
    spec = f"vocals={tiny_checkpoint},drums={second_checkpoint},bass=dsp,other=dsp"
    ensemble = pool.get(spec)
    assert ensemble.members[str(tiny_checkpoint)] is alone  # not loaded twice
    assert set(pool.loaded()) == {str(tiny_checkpoint), str(second_checkpoint), "dsp"}
    pool.get(str(second_checkpoint))  # a request for one model: the others may go
    assert pool.loaded() == ["dsp", str(second_checkpoint)]


def test_the_pool_loads_models_with_the_servers_backend_and_reports_it(tiny_checkpoint):
    pool = ModelPool(str(tiny_checkpoint), "cpu", memory_limit_bytes=1 << 50, backend="torch")
    assert pool.backend_name() is None  # nothing loaded yet
    assert pool.get().engine.backend == "torch"
    assert pool.backend_name() == "torch"
    assert ModelPool(str(tiny_checkpoint), "cpu").get().engine.backend == "openvino"
