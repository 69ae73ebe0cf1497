"""The model pool keeps the default warm and unloads others by memory."""

from __future__ import annotations

from daw_bridge.server.models import ModelPool, resident_bytes


def test_models_load_on_demand_and_stay_while_memory_allows(tiny_checkpoint):
    pool = ModelPool(str(tiny_checkpoint), "cpu", memory_limit_bytes=1 << 50)
    first = pool.get()
    assert pool.get("dsp").name == "dsp"
    assert pool.get() is first  # still warm, not reloaded
    assert pool.loaded() == ["dsp", str(tiny_checkpoint)]


def test_least_recently_used_model_is_unloaded_above_the_memory_limit(tiny_checkpoint):
    pool = ModelPool(str(tiny_checkpoint), "cpu", memory_limit_bytes=resident_bytes() // 2)
    pool.get()
    pool.get("dsp")
    assert pool.loaded() == ["dsp"]  # the one just asked for always stays
    assert pool.get().name == tiny_checkpoint.stem
    assert pool.loaded() == [str(tiny_checkpoint)]


def test_the_pool_loads_models_with_the_servers_backend_and_reports_it(tiny_checkpoint):
    pool = ModelPool(str(tiny_checkpoint), "cpu", memory_limit_bytes=1 << 50, backend="torch")
    assert pool.backend_name() is None  # nothing loaded yet
    assert pool.get().engine.backend == "torch"
    assert pool.backend_name() == "torch"
    assert ModelPool(str(tiny_checkpoint), "cpu").get().engine.backend == "openvino"
