"""Throughput of our engine against ``demucs.apply.apply_model``, and peak memory.

Full-size htdemucs (built from ``../shared/models/htdemucs_kwargs.json`` with
random weights: the same compute as the real checkpoint). Each round runs the
reference and every requested backend of our engine on the same clip, one
after the other in this process, with the same segment and overlap, so the
ratios are fair on a shared, noisy machine; we report medians over the rounds.
Deviation is measured against the reference output: the largest absolute
difference and the relative error ``20·log10(‖ours − ref‖ / ‖ref‖)`` in dB.

    python benchmarks/throughput.py                          # 30 s clip, 3 rounds
    python benchmarks/throughput.py --backend openvino-bf16  # CPUs with AMX / AVX-512 BF16
    python benchmarks/throughput.py --backend openvino-f16   # CPUs with AVX-512 FP16
    python benchmarks/throughput.py --backend torch,onnxruntime --seconds 60 --rounds 5
    python benchmarks/throughput.py --device cuda --seconds 600 --precision float32,bfloat16
    python benchmarks/throughput.py --rss-minutes 10         # peak RSS, each in a fresh process
    python benchmarks/throughput.py --rss-minutes 60 --rss-limit-s 300   # first 5 min only
    python benchmarks/throughput.py --rss-minutes 60 --rss-model small   # whole hour, small net

``--rss-minutes`` writes a WAV of that length (the evaluation songs tiled, or
noise) to a temporary folder, then separates it in a fresh subprocess per
contender: the reference (``demucs``'s own way: load the whole file,
``apply_model``, keep all stems, then save them) and ``daw-bridge``'s file
pipeline (``split_file``: streams the file and writes stems as it goes). RSS is
sampled from ``/proc`` every 0.5 s; the peak is the kernel's high-water mark
``VmHWM`` (``ru_maxrss`` is printed too, but it also counts the forked
benchmark process before ``exec``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"
KWARGS = SHARED / "models" / "htdemucs_kwargs.json"
SR = 44100


def build_model(size: str = "full"):
    import torch
    from demucs.htdemucs import HTDemucs

    spec = json.loads(KWARGS.read_text())
    kwargs = dict(spec["kwargs"])
    segment = Fraction(*spec["segment_fraction"])
    if size == "small":  # same structure and segment, a fraction of the compute
        kwargs.update(channels=8, bottom_channels=0, t_layers=1, t_heads=2, dconv_comp=4)
    torch.manual_seed(0)
    return HTDemucs(**kwargs, segment=segment).eval()


def random_checkpoint(folder: Path) -> Path:
    """``build_model("full")`` saved as Meta's release files are (``randomhtdemucs-<sha>.th``),
    for the benchmarks that give a server or a command line a model file."""
    from tests.conftest import save_checkpoint

    return save_checkpoint(build_model("full"), folder, "randomhtdemucs", half=True)


def music(seconds: float) -> np.ndarray:
    """The evaluation mixtures end to end (tiled), or noise if there are none."""
    from daw_bridge.audio.io import read_span

    songs = sorted((SHARED / "eval" / "musdb18-7-test").glob("*/mixture.flac"))
    frames = int(seconds * SR)
    parts, total = [], 0
    for song in songs:
        parts.append(read_span(song).samples)
        total += parts[-1].shape[1]
        if total >= frames:
            break
    if not parts:
        rng = np.random.default_rng(0)
        return (0.1 * rng.standard_normal((2, frames))).astype(np.float32)
    audio = np.concatenate(parts, axis=1)
    reps = -(-frames // audio.shape[1])
    return np.ascontiguousarray(np.tile(audio, (1, reps))[:, :frames])


def normalised(mix: np.ndarray):
    import torch

    wav = torch.from_numpy(mix)
    ref = wav.mean(0)
    return (wav - ref.mean()) / (ref.std() + 1e-8)


def rel_db(ours, ref) -> float:
    error = float((ours - ref).norm() / ref.norm())
    return 20 * np.log10(error) if error > 0 else float("-inf")


def segment_gflop(model) -> float:
    """Floating-point work of one forward pass on one segment, counted by PyTorch.

    ``FlopCounterMode`` has no formula for the CPU's attention kernel, which
    would leave out the transformer's attention (85 of 335 GFLOP for
    htdemucs), so it is given the same formula as the GPU kernels; the fused
    MHA fast path escapes the counter entirely, so it is switched off (the
    arithmetic is the same).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query_shape, key_shape, value_shape, *_args, **_kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    frames = int(model.segment * model.samplerate)
    counter = FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention},
    )
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(), counter:
            model(torch.zeros(1, model.audio_channels, frames))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() / 1e9


def profile(engines: dict, wav, device) -> None:
    """Where the time goes in the last contender's run: the operators that take the most."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    name, engine = list(engines.items())[-1]
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profiler(activities=activities) as recorded:
        engine.apply(wav)
        if device.type == "cuda":
            torch.cuda.synchronize()
    where = "device" if device.type == "cuda" else "cpu"
    print(f"\nWhere the {'GPU' if where == 'device' else 'CPU'}'s time goes ({name}):")
    print(recorded.key_averages().table(sort_by=f"self_{where}_time_total", row_limit=15))


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


def matmul_peak_gflops(size: int = 3072, repeats: int = 5) -> float:
    """What this machine's float32 matrix multiply reaches: the practical ceiling here."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def default_backends() -> str:
    """The default path, the other CPU runtime and exact PyTorch; bf16 and f16 where the
    CPU computes them."""
    return ",".join(
        measurable_backends(["auto", "openvino-bf16", "openvino-f16", "onnxruntime", "torch"])
    )


def measurable_backends(backends: list[str]) -> list[str]:
    """Those of ``backends`` this machine can run, saying why each other one is left out."""
    from daw_bridge.separation.backends import REDUCED_PRECISION, backend_available, cpu_computes

    kept = []
    for backend in backends:
        if not backend_available(backend):
            print(f"{backend} not measured: not installed")
        elif backend in REDUCED_PRECISION and not cpu_computes(backend):
            print(f"{backend} not measured: this CPU has no {REDUCED_PRECISION[backend].hardware}")
        else:
            kept.append(backend)
    return kept


PRECISIONS = {"float32": None, "float16": "float16", "bfloat16": "bfloat16"}


def variants(args: argparse.Namespace, device) -> list[tuple[str, dict]]:
    """``(label, engine options)`` per contender: CPU backends, or GPU precision x batch."""
    import torch

    if device.type == "cpu":
        backends = [b for b in (args.backend or default_backends()).split(",") if b]
        return [(b, {"backend": b}) for b in backends]
    out = []  # the ONNX backends are CPU paths; GPUs run PyTorch
    for precision in args.precision.split(","):
        half = PRECISIONS[precision]
        for batch in map(int, args.batch.split(",")):
            options = {"backend": "torch", "batch_size": batch, "half": half is not None}
            if half:
                options["half_dtype"] = getattr(torch, half)
            out.append((f"{precision}, batch {batch}", options))
    return out


def segments_in(model, frames: int, overlap: float) -> int:
    """How many segments ``apply_model`` runs over ``frames`` (each padded to full length)."""
    segment = int(model.segment * model.samplerate)
    return len(range(0, frames, int((1 - overlap) * segment)))


def throughput(args: argparse.Namespace) -> int:
    import torch
    from demucs.apply import apply_model

    from daw_bridge.separation.engine import DemucsEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.model)
    device = torch.device(args.device)
    wav = normalised(music(args.seconds))
    engines = {}
    for label, options in variants(args, device):
        started = time.perf_counter()
        engine = DemucsEngine([model], device=device, overlap=args.overlap, **options)
        if engine.backend != options["backend"]:
            label = f"{label} ({engine.backend})"
        engines[label] = engine
        if device.type == "cuda":
            engine.apply(wav[:, : 10 * SR])  # warm-up: kernels, cuDNN plans, allocator
        print(f"prepared {label} in {time.perf_counter() - started:.1f} s", flush=True)

    def reference():
        with torch.inference_mode():
            out = apply_model(
                model, wav[None].to(device), shifts=0, overlap=args.overlap, device=device
            )
        return out[0].float().cpu()

    times: dict[str, list[float]] = {"apply_model": [], **{b: [] for b in engines}}
    outputs = {}
    reference()  # warm-up (allocator, kernels, lazy sessions)
    for round_ in range(args.rounds):
        for name in times:
            started = time.perf_counter()
            out = reference() if name == "apply_model" else engines[name].apply(wav)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
            outputs[name] = out
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    ref = outputs["apply_model"]
    print(
        f"\nhtdemucs ({args.model} size, random weights), {args.seconds:g} s clip, "
        f"device {device_name(device)}, threads "
        f"{torch.get_num_threads()}, overlap {args.overlap}, {args.rounds} rounds (medians)\n"
    )
    print("| path | audio s / s | vs apply_model | max abs dev | rel. error |")
    print("|---|---:|---:|---:|---:|")
    ref_median = statistics.median(times["apply_model"])
    print(f"| `apply_model` (reference) | {args.seconds / ref_median:.2f} | 1.00x | - | - |")
    for name in engines:
        ratios = [r / o for r, o in zip(times["apply_model"], times[name], strict=True)]
        ours = outputs[name]
        print(
            f"| ours, `{name}` | "
            f"{args.seconds / statistics.median(times[name]):.2f} | "
            f"{statistics.median(ratios):.2f}x | {float((ours - ref).abs().max()):.1e} | "
            f"{rel_db(ours, ref):.0f} dB |"
        )
    print(
        "\nper-round seconds:", json.dumps({k: [round(t, 2) for t in v] for k, v in times.items()})
    )
    if args.profile:
        profile(engines, wav, device)
    if device.type == "cpu":
        work = segment_gflop(model) * segments_in(model, wav.shape[-1], args.overlap)
        peak = matmul_peak_gflops()
        print(
            f"\nWhat limits it: {work:.0f} GFLOP for this clip (FlopCounterMode); float32 "
            f"matrix multiply on this machine reaches {peak:.0f} GFLOP/s "
            f"({torch.get_num_threads()} threads, 3072² sgemm)."
        )
        for name, values in times.items():
            achieved = work / statistics.median(values)
            print(f"  {name}: {achieved:.0f} GFLOP/s, {100 * achieved / peak:.0f} % of that")
        floor = work / peak
        print(
            f"Ceiling: all of it at that rate, and nothing else, would take {floor:.1f} s, "
            f"i.e. {args.seconds / floor:.2f} audio s/s, {ref_median / floor:.2f}x apply_model. "
            f"2x apply_model needs {2 * work / ref_median:.0f} GFLOP/s over the whole network "
            "(compare the cores' FMA peak: benchmarks/fma_peak.c)."
        )
    return 0


# -- peak memory ----------------------------------------------------------------------

_CHILD = r"""
import sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from throughput import build_model
mode, source, out, size, backend = {mode!r}, {source!r}, {out!r}, {size!r}, {backend!r}
model = build_model(size)
print("ready", flush=True)
if mode == "reference":
    # What `python -m demucs` does: the whole track in memory, apply_model, then save.
    import torch
    from demucs.apply import apply_model
    from daw_bridge.audio.io import read_span, write_audio
    wav = torch.from_numpy(read_span(source).samples)
    ref = wav.mean(0); mean, std = ref.mean(), ref.std() + 1e-8
    with torch.inference_mode():
        stems = apply_model(model, ((wav - mean) / std)[None], shifts=0, overlap=0.25)[0]
    stems = stems * std + mean
    for name, stem in zip(model.sources, stems):
        write_audio(f"{{out}}/{{name}}.wav", stem.numpy(), 44100, overwrite=True)
else:
    from daw_bridge.separation.engine import DemucsEngine, DemucsSeparator
    from daw_bridge.separation.pipeline import split_file
    separator = DemucsSeparator("bench", DemucsEngine([model], device="cpu", backend=backend))
    split_file(source, separator, out, overwrite=True)
print("done", flush=True)
"""


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _measure(mode: str, source: Path, out: Path, args) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    code = _CHILD.format(
        root=str(REPO_ROOT), bench=str(REPO_ROOT / "benchmarks"), mode=mode, source=str(source),
        out=str(out), size=args.rss_model, backend=args.rss_backend,
    )  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []
    high_water = 0  # VmHWM of the running program (ru_maxrss also counts the fork before exec)
    killed = False
    while True:  # wait4 (not poll, which would reap the child and lose its rusage)
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        samples.append((time.perf_counter() - started, _status_kib(child.pid, "VmRSS")))
        high_water = max(high_water, _status_kib(child.pid, "VmHWM"))
        if not killed and args.rss_limit_s and time.perf_counter() - started > args.rss_limit_s:
            child.kill()
            killed = True
        time.sleep(0.5)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if not killed and child.returncode != 0:
        raise SystemExit(f"{mode} run failed")
    series = [kib for _, kib in samples if kib]
    quarter = [series[int(len(series) * q) - 1] // 1024 for q in (0.25, 0.5, 0.75, 1.0)]
    return {
        "mode": mode,
        "peak_rss_mib": round(high_water / 1024),
        "ru_maxrss_mib": round(usage.ru_maxrss / 1024),
        "rss_mib_at_25_50_75_100pct_of_run": quarter,
        "seconds": round(elapsed, 1),
        "finished": not killed,
    }


def peak_memory(args: argparse.Namespace) -> int:
    from daw_bridge.audio.io import write_audio

    work = Path(tempfile.mkdtemp(prefix="daw-bridge-rss-"))
    try:
        source = work / f"input{args.rss_minutes:g}min.wav"
        write_audio(source, music(60 * args.rss_minutes), SR)
        print(f"{args.rss_minutes:g}-minute input: {source.stat().st_size / 2**20:.0f} MiB WAV")
        rows = []
        for mode in args.rss_modes.split(","):
            rows.append(_measure(mode, source, work / mode, args))
            print(json.dumps(rows[-1]), flush=True)
        print(
            f"\nPeak RSS, {args.rss_minutes:g}-minute stereo 44.1 kHz input, {args.rss_model} "
            f"htdemucs, CPU{f', first {args.rss_limit_s:g} s only' if args.rss_limit_s else ''}\n"
        )
        print("| path | peak RSS | RSS at 25/50/75/100 % of the run | wall | finished |")
        print("|---|---:|---:|---:|---|")
        for row in rows:
            label = "`apply_model`, whole file" if row["mode"] == "reference" else "`split_file`"
            print(
                f"| {label} | {row['peak_rss_mib']} MiB | "
                f"{' / '.join(map(str, row['rss_mib_at_25_50_75_100pct_of_run']))} MiB | "
                f"{row['seconds']:.0f} s | {'yes' if row['finished'] else 'no (stopped)'} |"
            )
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    from daw_bridge.separation.backends import BACKENDS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--backend",
        help="comma-separated, of: " + ", ".join(BACKENDS) + " (auto: the default path; "
        "default: auto,onnxruntime,torch, and openvino-bf16/-f16 where the CPU computes them)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", default="float32", help="GPU only, comma-separated: float32,float16,bfloat16"
    )
    parser.add_argument("--batch", default="4", help="GPU only: segments per pass, comma-separated")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--profile", action="store_true", help="the top operators of the last path")
    parser.add_argument("--model", choices=("full", "small"), default="full")
    parser.add_argument("--rss-minutes", type=float, default=0, metavar="M")
    parser.add_argument("--rss-limit-s", type=float, default=0, help="stop each run after S s")
    parser.add_argument("--rss-model", choices=("full", "small"), default="full")
    parser.add_argument("--rss-backend", default="auto")
    parser.add_argument("--rss-modes", default="reference,ours")
    args = parser.parse_args()
    if not KWARGS.is_file():
        print(f"No {KWARGS}: nothing to measure.")
        return 0
    return peak_memory(args) if args.rss_minutes else throughput(args)


if __name__ == "__main__":
    raise SystemExit(main())
