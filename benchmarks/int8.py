"""Post-training int8 quantization of htdemucs's network core (NNCF): its error and speed.

The ``openvino`` backend runs the core (:mod:`daw_bridge.separation.htcore`) as
a float32 OpenVINO model. Here NNCF quantizes that same model to int8, calibrated
on the core's real inputs, captured while the engine separates the first
``--calibration`` evaluation songs. Then, on the next ``--limit`` songs (never
the calibration ones), the engine runs with its core's compiled model swapped
for the int8 one, and we report, as ``precision.py`` does, each stem's
deviation from exact PyTorch float32 (``backend="torch"``) in dB relative to
that stem's own energy, the SDR change it can cause, and the median seconds
per song of float32 OpenVINO and int8 (interleaved, same songs, same process).

NNCF is not a dependency of daw-bridge: ``python3 -m pip install nncf`` first.
int8 pays off only on CPUs with int8 dot products (AVX-512 VNNI, AVX-VNNI, AMX);
on AVX2-only CPUs it can be slower than float32.

    python benchmarks/int8.py                          # 3 calibration songs, 10 test songs
    python benchmarks/int8.py --limit 2 --calibration 1
    python benchmarks/int8.py --model-type transformer # NNCF's transformer scheme
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_songs import DEFAULT_SONGS, STEMS
from precision import (
    BOUND_DB,
    read_mixtures,
    sdr_change_bound,
    standardised,
    stem_deviations_db,
)
from structured_weights import load_weights
from throughput import build_model


def cpu_int8_support() -> str:
    """The int8 dot-product instructions this CPU has, from ``/proc/cpuinfo``."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n")[0].split()
    except (OSError, IndexError):
        return "unknown"
    found = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return ", ".join(found) or ("AVX2 only, no VNNI" if "avx2" in flags else "no AVX2")


def quantize(core, items: list[dict], model_type: str, folder: Path) -> Callable:
    """The int8 runner for ``core``'s one compiled shape, calibrated on ``items``."""
    import nncf
    import openvino as ov
    import torch

    from daw_bridge.separation.accel import _cached_onnx, _openvino_runner

    ((mix_shape, mag_shape),) = core._runners
    onnx = _cached_onnx(core.model, torch.zeros(mix_shape), torch.zeros(mag_shape), "openvino")
    kind = {"default": None, "transformer": nncf.ModelType.TRANSFORMER}[model_type]
    quantized = nncf.quantize(
        ov.Core().read_model(str(onnx)),
        nncf.Dataset(items),
        model_type=kind,
        subset_size=len(items),
    )
    xml = folder / "core-int8.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return _openvino_runner(xml, core.threads, "openvino")  # the same compile settings


def main() -> int:
    import nncf

    from daw_bridge.separation.engine import DemucsEngine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=Path, default=DEFAULT_SONGS)
    parser.add_argument("--calibration", type=int, default=3, help="songs to calibrate on")
    parser.add_argument("--limit", type=int, default=10, help="test songs after those")
    parser.add_argument("--model", choices=("full", "small"), default="full")
    parser.add_argument("--weights", type=Path, help="from structured_weights.py (default random)")
    parser.add_argument("--model-type", choices=("default", "transformer"), default="default")
    args = parser.parse_args()

    started = time.perf_counter()
    model = load_weights(args.weights) if args.weights else build_model(args.model)
    songs = read_mixtures(args.songs, args.calibration + args.limit)
    calibration, tests = songs[: args.calibration], songs[args.calibration :]
    reference = DemucsEngine([model], device="cpu", backend="torch")
    engine = DemucsEngine([model], device="cpu", backend="openvino")
    core = engine._cores[id(model)]
    ((key, float32),) = core._runners.items()

    items: list[dict] = []

    def capture(mix: np.ndarray, mag: np.ndarray, should_cancel) -> tuple:
        items.append({"mix": mix.copy(), "mag": mag.copy()})
        return float32(mix, mag, should_cancel)

    core._runners[key] = capture
    for _song, mix in calibration:
        engine.apply(standardised(mix)[0])
    print(f"{len(items)} calibration inputs from {len(calibration)} songs", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        tick = time.perf_counter()
        int8 = quantize(core, items, args.model_type, Path(folder))
        quantize_s = time.perf_counter() - tick
    print(f"quantized in {quantize_s:.0f} s (NNCF {nncf.__version__})", flush=True)

    rows: list[dict] = []
    seconds: dict[str, list[float]] = {"openvino (f32)": [], "int8 (NNCF)": []}
    core._runners[key] = int8
    engine.apply(standardised(tests[0][1])[0])  # the first inference of a compiled model is slow
    for number, (song, mix) in enumerate(tests, 1):
        normalised, mean, std = standardised(mix)
        exact = reference.apply(normalised).numpy() * std + mean
        for name, runner in zip(seconds, (float32, int8), strict=True):
            core._runners[key] = runner
            tick = time.perf_counter()
            ours = engine.apply(normalised).numpy() * std + mean
            seconds[name].append(time.perf_counter() - tick)
            if runner is int8:
                for stem, db in zip(STEMS, stem_deviations_db(ours, exact), strict=True):
                    rows.append({"song": song, "stem": stem, "deviation_db": db})
        print(f"{number}/{len(tests)} {song} ({time.perf_counter() - started:.0f} s)", flush=True)
    core._runners[key] = float32

    worst = max(rows, key=lambda r: r["deviation_db"])
    per_stem = [max(r["deviation_db"] for r in rows if r["stem"] == s) for s in STEMS]
    bound = [sdr_change_bound(worst["deviation_db"], s) for s in (9, 11)]
    f32_s, int8_s = (statistics.median(s) for s in seconds.values())
    weights = f"trained ({args.weights.name})" if args.weights else "random"
    print(
        f"\nint8 core (NNCF {nncf.__version__}, model type {args.model_type}, "
        f"{len(items)} calibration inputs from {len(calibration)} songs) against `torch` float32, "
        f"{args.model}-size htdemucs, {weights} weights, {len(tests)} songs; CPU int8 support: "
        f"{cpu_int8_support()}. Deviation in dB re each stem's own energy; the bound is the "
        f"largest SDR change it can cause on a separation of 9 / 11 dB SDR\n"
    )
    print("| worst stem (song) | median | drums / bass / other / vocals worst | "
          "SDR change ≤ (9 / 11 dB) | within -50 dB | s/song f32 OpenVINO | s/song int8 | "
          "int8 speed-up |")  # fmt: skip
    print("|---:|---:|---:|---:|---|---:|---:|---:|")
    print(
        f"| {worst['deviation_db']:.1f} dB ({worst['stem']}, {worst['song']}) | "
        f"{statistics.median(r['deviation_db'] for r in rows):.1f} dB | "
        f"{' / '.join(f'{d:.0f}' for d in per_stem)} | {bound[0]:.3f} / {bound[1]:.3f} dB | "
        f"{'yes' if worst['deviation_db'] <= BOUND_DB else 'no'} | {f32_s:.2f} | {int8_s:.2f} | "
        f"{f32_s / int8_s:.2f}x |"
    )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
