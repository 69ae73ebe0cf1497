"""The accelerated CPU backends (network core in ONNX Runtime / OpenVINO) and their fallbacks."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from daw_bridge.errors import CancelledError, InvalidOptionError
from daw_bridge.separation import accel, backends
from daw_bridge.separation.engine import DemucsEngine
from daw_bridge.separation.htcore import (
    HTDemucsCore,
    _normalised,
    forward_with_core,
    supports_core,
)
from tests.cancel_latency import cancel_latencies
from tests.conftest import mix_of, tiny_htdemucs

SR = 44100
INSTALLED = [b for b in ("onnxruntime", "openvino") if backends.backend_available(b)]


def rel_db(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return 20 * torch.log10((ours - reference).norm() / reference.norm()).item()


@pytest.fixture(scope="module")
def model():
    return tiny_htdemucs(seed=4)


def test_core_split_reproduces_the_forward_pass_exactly(model):
    mix = mix_of(0.7)[None]  # shorter than the segment: padded and cut like forward
    assert supports_core(model)
    core = HTDemucsCore(model)
    with torch.inference_mode():
        assert torch.equal(forward_with_core(model, mix, core), model(mix))


def largest_value_computed(onnx_path: Path, inputs: dict[str, np.ndarray]) -> float:
    """The largest finite magnitude any operation of the graph outputs (OpenVINO, float32)."""
    import openvino as ov

    graph = ov.Core().read_model(str(onnx_path))
    watched = [
        output
        for op in graph.get_ordered_ops()
        if op.get_type_name() not in {"Parameter", "Result"}
        for output in op.outputs()
        if output.get_element_type().is_real()
    ]
    graph.add_outputs(watched)
    compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled.create_infer_request().infer(inputs)
    largest = 0.0
    for output in compiled.outputs:
        values = np.asarray(result[output])
        finite = values[np.isfinite(values)]
        largest = max(largest, float(np.abs(finite).max()) if finite.size else 0.0)
    return largest


@pytest.mark.skipif("openvino" not in INSTALLED, reason="openvino is not installed")
def test_the_exported_core_computes_nothing_float16_cannot_hold(model, tmp_path):
    # OpenVINO's float16 turned every stem into NaN: the inputs' standard deviation, then
    # inside the core, divided by the element count less one (2.75 million at full size).
    frames = int(model.valid_length(int(model.segment * SR)))
    mix = mix_of(frames / SR)[None, :, :frames]
    with torch.inference_mode():
        mag = model._magnitude(model._spec(mix))
    inputs = {"mix": _normalised(mix, (1, 2))[0], "mag": _normalised(mag, (1, 2, 3))[0]}
    path = tmp_path / "core.onnx"
    path.write_bytes(accel.export_core(model, inputs["mix"], inputs["mag"]))
    inputs = {name: x.numpy() for name, x in inputs.items()}
    assert largest_value_computed(path, inputs) < 65504  # float16 holds nothing larger


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_accelerated_backends_stay_within_80_db_of_torch(model, backend):
    if backend not in INSTALLED:
        pytest.skip(f"{backend} is not installed (pip install {backend} onnx)")
    mix = mix_of(2.3)
    exact = DemucsEngine([model], device="cpu", backend="torch").apply(mix)
    engine = DemucsEngine([model], device="cpu", backend=backend)
    fast = engine.apply(mix)
    assert engine.backend == backend
    assert rel_db(fast, exact) < -80


@pytest.mark.skipif(not INSTALLED, reason="no accelerated backend installed")
def test_auto_picks_openvino_for_htdemucs_on_cpu(model):
    expected = "openvino" if "openvino" in INSTALLED else "torch"
    assert DemucsEngine([model], device="cpu").backend == expected


def test_missing_runtime_falls_back_to_torch_loudly(model, monkeypatch, caplog):
    monkeypatch.setattr("daw_bridge.separation.engine.backend_available", lambda _b: False)
    with caplog.at_level(logging.WARNING):
        engine = DemucsEngine([model], device="cpu")
    assert engine.backend == "torch"
    assert "pip install openvino onnx" in caplog.text


def test_a_missing_backend_asked_for_by_name_is_an_error(model, monkeypatch):
    monkeypatch.setattr("daw_bridge.separation.engine.backend_available", lambda _b: False)
    with pytest.raises(InvalidOptionError, match="pip install onnxruntime onnx"):
        DemucsEngine([model], device="cpu", backend="onnxruntime")
    with pytest.raises(InvalidOptionError, match="Unknown backend"):
        DemucsEngine([model], device="cpu", backend="tensorrt9")


@pytest.mark.skipif(not INSTALLED, reason="no accelerated backend installed")
def test_a_failing_backend_falls_back_to_torch_loudly(model, monkeypatch, caplog):
    mix = mix_of(1.2)
    exact = DemucsEngine([model], device="cpu", backend="torch").apply(mix)
    engine = DemucsEngine([model], device="cpu", backend=INSTALLED[0])

    def broken(*_args, **_kwargs):
        raise RuntimeError("export exploded")

    monkeypatch.setattr(accel.AcceleratedCore, "__call__", broken)
    with caplog.at_level(logging.WARNING):
        out = engine.apply(mix)
    assert engine.backend == "torch"
    assert "export exploded" in caplog.text and "falling back" in caplog.text
    assert torch.equal(out, exact)


@pytest.mark.skipif(not INSTALLED, reason="no accelerated backend installed")
def test_the_exported_core_is_cached_on_disk(model):
    DemucsEngine([model], device="cpu", backend=INSTALLED[0]).prepare()
    files = list(accel.compiled_dir().glob("htdemucs-core-*.onnx"))
    assert files
    inodes = {f: f.stat().st_ino for f in files}
    DemucsEngine([model], device="cpu", backend=INSTALLED[0]).prepare()
    # The same files, not rewritten (a fresh export would be renamed in as a new inode).
    assert {f: f.stat().st_ino for f in accel.compiled_dir().glob("*.onnx")} == inodes


@pytest.mark.skipif(not INSTALLED, reason="no accelerated backend installed")
def test_loading_a_cached_core_marks_it_recently_used(model, tmp_path, monkeypatch):
    monkeypatch.setenv("DAW_BRIDGE_CACHE_DIR", str(tmp_path))  # only this model's core in it
    DemucsEngine([model], device="cpu", backend=INSTALLED[0]).prepare()
    (core,) = accel.compiled_dir().glob("htdemucs-core-*.onnx")
    os.utime(core, (1_000_000_000, 1_000_000_000))
    DemucsEngine([model], device="cpu", backend=INSTALLED[0]).prepare()
    assert core.stat().st_mtime > 1_000_000_000 + 3600


def _fake_core(folder, name: str, size: int, mtime: float):
    path = folder / name
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


def test_exported_cores_beyond_the_disk_budget_are_pruned_least_recently_used_first(tmp_path):
    now = time.time()
    oldest = _fake_core(tmp_path, "htdemucs-core-a.onnx", 100, now - 400)
    old = _fake_core(tmp_path, "htdemucs-core-b.onnx", 100, now - 300)
    recent = _fake_core(tmp_path, "htdemucs-core-c.onnx", 100, now - 200)
    new = _fake_core(tmp_path, "htdemucs-core-d.onnx", 100, now)
    accel._prune_compiled(tmp_path, keep=new, budget=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == [recent.name, new.name]
    assert not oldest.exists() and not old.exists()


def test_the_new_core_is_kept_even_when_it_alone_exceeds_the_budget(tmp_path):
    now = time.time()
    other = _fake_core(tmp_path, "htdemucs-core-a.onnx", 100, now - 10)
    new = _fake_core(tmp_path, "htdemucs-core-b.onnx", 500, now - 20)  # clock skew: not newest
    accel._prune_compiled(tmp_path, keep=new, budget=250)
    assert new.exists() and not other.exists()


def test_partial_exports_left_by_a_dead_process_are_cleared_but_running_ones_kept(tmp_path):
    now = time.time()
    stale = _fake_core(tmp_path, ".htdemucs-core-a.onnx.11.partial", 10, now - 2 * 3600)
    running = _fake_core(tmp_path, ".htdemucs-core-b.onnx.12.partial", 10, now - 5)
    keep = _fake_core(tmp_path, "htdemucs-core-c.onnx", 10, now)
    accel._prune_compiled(tmp_path, keep=keep)
    assert not stale.exists() and running.exists() and keep.exists()


def test_accelerated_backends_are_for_the_cpu_only(model):
    if torch.cuda.is_available():
        with pytest.raises(InvalidOptionError, match="CPU only"):
            DemucsEngine([model], device="cuda", backend="onnxruntime")
    assert DemucsEngine([model], device="cpu", backend="torch").backend == "torch"


@pytest.fixture
def openvino_configs(monkeypatch):
    """The settings each OpenVINO compile is given, as OpenVINO itself receives them."""
    openvino = pytest.importorskip("openvino")
    seen: list[dict] = []

    class RecordingCore(openvino.Core):
        def compile_model(self, model, device, config):
            seen.append(dict(config))
            return super().compile_model(model, device, config)

    monkeypatch.setattr(openvino, "Core", RecordingCore)
    return seen


def test_openvino_is_pinned_to_float32_so_cpus_with_bf16_do_not_downcast(model, openvino_configs):
    mix = mix_of(1.2)
    exact = DemucsEngine([model], device="cpu", backend="torch").apply(mix)
    fast = DemucsEngine([model], device="cpu").apply(mix)
    assert [config["INFERENCE_PRECISION_HINT"] for config in openvino_configs] == ["f32"]
    assert rel_db(fast, exact) < -80


REDUCED = list(backends.REDUCED_PRECISION)


def cpu_capabilities(monkeypatch, *names: str) -> None:
    """Make OpenVINO appear to list ``names`` among this CPU's capabilities."""
    monkeypatch.setattr(backends, "_cpu_capabilities", lambda: names)


@pytest.mark.parametrize(
    ("backend", "arithmetic"), [("openvino-bf16", "bfloat16"), ("openvino-f16", "float16")]
)
def test_a_reduced_precision_backend_is_refused_where_the_cpu_lacks_it(
    model, monkeypatch, backend, arithmetic
):
    cpu_capabilities(monkeypatch, "FP32", "INT8")
    with pytest.raises(InvalidOptionError, match=f"no {arithmetic} arithmetic") as raised:
        DemucsEngine([model], device="cpu", backend=backend)
    assert "openvino backend" in raised.value.fix


@pytest.mark.parametrize("backend", REDUCED)
def test_a_reduced_precision_backend_asks_openvino_for_its_precision(
    model, monkeypatch, openvino_configs, backend
):
    cpu_capabilities(monkeypatch, "FP32", "BF16", "FP16")
    DemucsEngine([model], device="cpu", backend=backend)
    asked = backends.REDUCED_PRECISION[backend].openvino_type
    assert [config["INFERENCE_PRECISION_HINT"] for config in openvino_configs] == [asked]


@pytest.mark.parametrize("backend", REDUCED)
def test_where_openvino_quietly_keeps_float32_the_reduced_backend_falls_back_loudly(
    model, monkeypatch, caplog, backend
):
    # OpenVINO takes the precision as a hint. Its capability list is faked here, its
    # compiler is real: on a CPU without the arithmetic it compiles float32 instead.
    pytest.importorskip("openvino")
    if backends.cpu_computes(backend):
        pytest.skip(f"this CPU computes {backend}'s precision: OpenVINO honours the hint")
    cpu_capabilities(monkeypatch, "FP32", "BF16", "FP16")
    with caplog.at_level(logging.WARNING):
        engine = DemucsEngine([model], device="cpu", backend=backend)
    assert engine.backend == "torch"
    assert f"compiled the {backend} core in f32" in caplog.text


@pytest.mark.parametrize(
    ("backend", "compiled", "accepted"),
    [
        ("openvino", "f32", True),
        ("openvino", "bf16", False),
        ("openvino-f16", "f16", True),
        ("openvino-f16", "f32", False),
        ("openvino-bf16", "bf16", True),
    ],
)
def test_a_core_compiled_in_another_precision_than_promised_is_refused(backend, compiled, accepted):
    openvino = pytest.importorskip("openvino")
    for precision in (getattr(openvino.Type, compiled), compiled):  # as OpenVINO types it, or text
        if accepted:
            accel._check_precision(precision, backend)
        else:
            with pytest.raises(accel.BackendUnavailable, match=f"in {compiled}, not "):
                accel._check_precision(precision, backend)


@pytest.mark.parametrize("capabilities", [(), ("BF16",), ("BF16", "FP16")])
def test_auto_stays_float32_even_where_the_cpu_computes_less(model, monkeypatch, capabilities):
    # bfloat16 moved single stems by up to -46 dB (OpenVINO, AMX Xeon) and -40 dB (trained
    # weights, CUDA autocast): outside the -50 dB a default may cost (benchmarks/precision.py).
    # OpenVINO's float16 overflowed to NaN on trained weights (a Xeon with AVX-512 FP16).
    cpu_capabilities(monkeypatch, "FP32", *capabilities)
    assert DemucsEngine([model], device="cpu").backend in {"openvino", "torch"}


def test_cancel_stops_a_native_call_from_a_watcher_thread():
    flag = threading.Event()
    stopped = threading.Event()
    with accel._watch_cancel(flag.is_set, stopped.set) as hit:
        flag.set()
        assert stopped.wait(2.0)  # the native call would be terminated here
    assert hit()
    flag.set()
    with pytest.raises(CancelledError), accel._watch_cancel(flag.is_set, stopped.set):
        pass  # already cancelled: the call never starts


@pytest.mark.skipif(not INSTALLED, reason="no accelerated backend installed")
def test_cancel_during_an_accelerated_pass(model):
    engine = DemucsEngine([model], device="cpu", backend=INSTALLED[0])
    engine.prepare()
    polls = {"count": 0}

    def from_the_watcher_on() -> bool:  # 1: between batches, 2: before the native call
        polls["count"] += 1
        return polls["count"] > 2

    done: list[float] = []
    with pytest.raises(CancelledError):
        engine.apply(mix_of(3.0), done.append, from_the_watcher_on)
    assert len(done) <= 1


def slow_openvino_core(path: Path, steps: int = 200) -> Path:
    """An OpenVINO model with the core's inputs and outputs (``mix``, ``mag``) whose
    one call takes seconds, in short steps (a 0.5 GFLOP matrix product each), as
    the real core's layers are; small to build and compile."""
    import openvino as ov
    from openvino import opset13 as ops

    mix = ops.parameter([1024, 512], ov.Type.f32, name="mix")
    mag = ops.parameter([4], ov.Type.f32, name="mag")
    mix.output(0).set_names({"mix"})
    mag.output(0).set_names({"mag"})
    weight = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32) / 23
    x = mix
    for _ in range(steps):
        x = ops.tanh(ops.matmul(x, ops.constant(weight), False, False))
    xt = ops.multiply(mag, ops.constant(np.float32(2.0)))
    ov.save_model(ov.Model([x, xt], [mix, mag], "slow-core"), str(path))
    return path


@pytest.mark.skipif(
    "openvino" not in INSTALLED, reason="openvino is not installed (pip install openvino onnx)"
)
def test_a_cancel_aborts_a_running_openvino_call_within_a_poll_and_one_step(tmp_path):
    """The watcher polls every 50 ms and OpenVINO stops after the step it is in (about
    6 ms here), so 50 ms is not always met on this path: the bound adds 100 ms for
    the step and a busy machine's scheduling. One call takes 1 to 3 s on a 2-core
    CPU; a call the cancel did not abort would run on for 70 % of that."""
    run = accel._openvino_runner(slow_openvino_core(tmp_path / "slow.xml"), 2, "openvino")
    mix = np.random.default_rng(1).standard_normal((1024, 512)).astype(np.float32)
    mag = np.ones(4, np.float32)
    started = time.perf_counter()
    run(mix, mag, None)
    whole_call = time.perf_counter() - started
    delays = [0.1 * whole_call, 0.3 * whole_call]
    latencies = cancel_latencies(lambda should_cancel: run(mix, mag, should_cancel), delays)
    assert max(latencies) < accel._CANCEL_POLL_S + 0.1, latencies


@pytest.mark.slow
@pytest.mark.skipif(not INSTALLED, reason="no accelerated backend installed")
def test_full_size_htdemucs_default_backend_is_within_60_db_of_apply_model(full_size_htdemucs):
    """The acceptance bar is -40 dB; measured about -88 dB (benchmarks/throughput.py)."""
    full, mix, reference = full_size_htdemucs
    engine = DemucsEngine([full], device="cpu")
    assert engine.backend == ("openvino" if "openvino" in INSTALLED else "torch")
    assert rel_db(engine.apply(mix), reference) < -60
