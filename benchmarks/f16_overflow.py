"""Where does OpenVINO's float16 overflow in the htdemucs core? How much headroom is there?

On a Xeon with AVX-512 FP16 (2026-11-27), ``openvino-f16`` gave NaN on every stem
of weights with trained structure. This runs one real segment through the
exported core with every operation's output made a model output, and reports:

- in float32 (any CPU): the operations whose outputs come closest to float16's
  largest number (65504), by headroom, and the smallest headroom per operation
  type: where float16 would overflow first;
- in float16 (where the CPU computes it): the first operations, in graph order,
  whose output holds NaN or infinity, and whether the plain core (no extra
  outputs, so OpenVINO fuses as it does in the engine) overflows as well.

Making every output visible stops some of OpenVINO's fusions, inside which it may
keep float32, so the first failing operation here is a lead, not a proof.

    python benchmarks/f16_overflow.py                          # float32 headroom
    python benchmarks/f16_overflow.py --weights trained.th     # from structured_weights.py
    python benchmarks/f16_overflow.py --precision f16 --weights trained.th   # fp16 CPUs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

FLOAT16_MAX = 65504.0
_SKIPPED = {"Parameter", "Constant", "Result"}


def segment_inputs(model):
    """The core's two inputs for one segment of the evaluation songs, normalised as the
    engine normalises a mix."""
    import torch
    from throughput import music, normalised

    frames = int(model.valid_length(int(model.segment * model.samplerate)))
    mix = normalised(music(frames / model.samplerate + 1))[None, :, :frames]
    with torch.inference_mode():
        mag = model._magnitude(model._spec(mix))
    return mix.contiguous(), mag.contiguous()


def watched_outputs(onnx_path: Path) -> list[tuple[str, str, int]]:
    """``(operation, type, bytes)`` of every real-valued operation output, in graph order."""
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    return [
        (op.get_friendly_name(), op.get_type_name(), 4 * int(np.prod(list(output.get_shape()))))
        for op in model.get_ordered_ops()
        if op.get_type_name() not in _SKIPPED
        for output in op.outputs()
        if output.get_element_type().is_real()
    ]


def in_groups(watched: list[tuple[str, str, int]], budget: int) -> list[list[int]]:
    """Indices of ``watched`` in consecutive groups whose outputs fit in ``budget`` bytes:
    all at once, a full-size core's outputs take over 20 GB."""
    groups: list[list[int]] = [[]]
    used = 0
    for index, (_, _, size) in enumerate(watched):
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += size
    return groups


def compile_core(model, precision: str, threads: int):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(model, "CPU", config)
    computed = compiled.get_property("INFERENCE_PRECISION_HINT")
    computed = computed.to_string() if hasattr(computed, "to_string") else str(computed)
    if computed != precision:
        raise SystemExit(f"OpenVINO compiled in {computed}, not {precision}, on this CPU.")
    return compiled


def core_is_finite(onnx_path: Path, precision: str, threads: int, mix, mag) -> bool:
    """Whether the plain core (fused as the engine compiles it) gives finite outputs."""
    import openvino as ov

    compiled = compile_core(ov.Core().read_model(str(onnx_path)), precision, threads)
    result = compiled.create_infer_request().infer({"mix": mix.numpy(), "mag": mag.numpy()})
    return all(np.isfinite(np.asarray(result[output])).all() for output in compiled.outputs)


def output_stats(
    onnx_path: Path, group: list[int], precision: str, threads: int, mix, mag
) -> list[tuple[float, int]]:
    """``(largest magnitude of the finite values, non-finite count)`` for each output of
    ``group``, made visible by adding them to the model's outputs."""
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    ordered = [
        output
        for op in model.get_ordered_ops()
        if op.get_type_name() not in _SKIPPED
        for output in op.outputs()
        if output.get_element_type().is_real()
    ]
    wanted = [ordered[i] for i in group]
    for number, output in enumerate(wanted):  # a name to find each by in the results
        output.get_tensor().add_names({f"watched_{number}"})
    model.add_outputs(wanted)  # an output that already is one (x, xt) is not added twice
    compiled = compile_core(model, precision, threads)
    result = compiled.create_infer_request().infer({"mix": mix.numpy(), "mag": mag.numpy()})
    stats: list[tuple[float, int]] = [(float("nan"), 0)] * len(wanted)  # nan: not kept
    for output in compiled.outputs:
        numbers = [int(n.split("_")[1]) for n in output.get_names() if n.startswith("watched_")]
        if not numbers:
            continue
        values = np.asarray(result[output])
        finite = np.isfinite(values)
        peak = float(np.abs(values[finite]).max()) if finite.any() else 0.0
        for number in numbers:
            stats[number] = (peak, int(values.size - finite.sum()))
    return stats


def headroom_report(watched, stats, rows: int) -> None:
    print(f"\nLargest outputs against float16's range ({FLOAT16_MAX:g}):\n")
    print("| operation | type | largest magnitude | headroom |")
    print("|---|---|---:|---:|")
    order = sorted(range(len(stats)), key=lambda i: -stats[i][0])
    for i in order[:rows]:
        name, kind, _ = watched[i]
        peak = stats[i][0]
        print(f"| {name} | {kind} | {peak:.3g} | {FLOAT16_MAX / max(peak, 1e-30):.3g}x |")
    by_type: dict[str, float] = defaultdict(float)
    for (_, kind, _), (peak, _) in zip(watched, stats, strict=True):
        by_type[kind] = max(by_type[kind], peak)
    print("\n| operation type | largest magnitude | headroom |")
    print("|---|---:|---:|")
    for kind, peak in sorted(by_type.items(), key=lambda item: -item[1]):
        print(f"| {kind} | {peak:.3g} | {FLOAT16_MAX / max(peak, 1e-30):.3g}x |")


def overflow_report(watched, stats, rows: int) -> None:
    broken = [i for i, (_, bad) in enumerate(stats) if bad]
    print(f"\nfloat16, each output made visible: {len(broken)} of {len(stats)} not finite")
    if broken:
        print("\nThe first, in graph order:\n")
        print("| # | operation | type | non-finite values |")
        print("|---:|---|---|---:|")
        for i in broken[:rows]:
            name, kind, size = watched[i]
            print(f"| {i} | {name} | {kind} | {stats[i][1]} of {size // 4} |")


def main() -> int:
    import torch
    from throughput import build_model

    from daw_bridge.separation.accel import export_core
    from daw_bridge.separation.backends import backend_available, cpu_computes

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, help="from structured_weights.py (default random)")
    parser.add_argument("--precision", choices=("f32", "f16"), default=None)
    parser.add_argument("--threads", type=int, default=0, help="OpenVINO threads (0: all)")
    parser.add_argument("--model", choices=("full", "small"), default="full")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--budget-gib", type=float, default=3, help="memory for watched outputs")
    args = parser.parse_args()
    if not backend_available("openvino"):
        print("OpenVINO is not installed: python3 -m pip install openvino onnx")
        return 1
    precision = args.precision or ("f16" if cpu_computes("openvino-f16") else "f32")
    if args.weights:
        from structured_weights import load_weights

        model = load_weights(args.weights)
    else:
        model = build_model(args.model)
    torch.set_grad_enabled(False)
    mix, mag = segment_inputs(model)
    weights = f"trained ({args.weights.name})" if args.weights else "random"
    size = "full-size" if args.weights or args.model == "full" else "small"
    print(f"{size} htdemucs core, {weights} weights, one segment, OpenVINO {precision}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "core.onnx"
        path.write_bytes(export_core(model, mix, mag))
        if precision == "f16":
            state = "finite" if core_is_finite(path, "f16", args.threads, mix, mag) else "NOT"
            print(f"\nthe plain core in float16 (as the engine compiles it): {state} finite")
        watched = watched_outputs(path)
        groups = in_groups(watched, int(args.budget_gib * 2**30))
        print(f"{len(watched)} operation outputs, watched in {len(groups)} runs", flush=True)
        stats = []
        for group in groups:
            stats += output_stats(path, group, precision, args.threads, mix, mag)
    if precision == "f16":
        overflow_report(watched, stats, args.rows)
    headroom_report(watched, stats, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
