"""What would make the GPU path faster, and what each option costs in deviation.

On an H100 (2026-11-27) the engine's CUDA path reached 2.49x ``apply_model`` in
float32 (196x real time), and float16 autocast bought nothing on top
(benchmarks/throughput.py). Its profile put 23 % of the GPU's time in one copy
of the finished stems to pageable host memory and 22 % in ``native_group_norm``,
whose moments kernel gives each (sample, group) row one block: a batch of 16 with
one group keeps 16 of 132 multiprocessors busy. This times one batch of segments
of the full-size network, forward pass only, under each candidate setting, with
each one's worst per-stem deviation from strict float32 (TF32 off) on the same
batch of real music, then the stems' copy to the host (pageable, pinned, into
pre-touched pages, through a pinned staging buffer),
so one short run on a lent GPU says which change is worth building into the
engine and whether it stays inside the -50 dB bound (README, "Precision").

    python benchmarks/gpu_speedups.py --device cuda --batch 16
    python benchmarks/gpu_speedups.py --device cuda --compile   # + torch.compile (slow)
    python benchmarks/gpu_speedups.py --device cpu --model small --batch 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


def group_norm_by_reduction(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """``F.group_norm`` as one reduction and one fused multiply-add: the same float32
    arithmetic, but PyTorch's reduction kernel splits long rows over many blocks."""
    import torch

    n, channels = x.shape[:2]
    var, mean = torch.var_mean(x.reshape(n, num_groups, -1), dim=-1, unbiased=False)
    per_group = channels // num_groups
    scale = torch.rsqrt(var + eps).repeat_interleave(per_group, dim=1)  # (n, channels)
    if weight is not None:
        scale = scale * weight
    shift = -mean.repeat_interleave(per_group, dim=1) * scale
    if bias is not None:
        shift = shift + bias
    shape = (n, channels) + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.view(shape), x, scale.view(shape))


@contextlib.contextmanager
def settings(
    *, benchmark: bool = False, tf32_matmul: bool = False, half=None, group_norm: bool = False
) -> Iterator[None]:
    """cuDNN's autotuner, TF32 matrix products, autocast and the group norm, restored after."""
    import torch
    from torch.nn import functional

    saved = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision
    original_group_norm = functional.group_norm
    torch.backends.cudnn.benchmark = benchmark
    if tf32_matmul:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    if group_norm:  # nn.GroupNorm (and demucs's subclasses) call functional.group_norm
        functional.group_norm = group_norm_by_reduction
    try:
        with contextlib.ExitStack() as stack:
            if half is not None:
                stack.enter_context(torch.autocast(device_type="cuda", dtype=half))
            yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision = saved
        functional.group_norm = original_group_norm


def batch_of_music(model, batch: int, device):
    """``batch`` segments cut from different places of the evaluation songs, normalised."""
    import torch
    from throughput import music, normalised

    frames = int(model.segment * model.samplerate)
    wav = normalised(music(batch * model.segment + 1))
    return torch.stack([wav[:, i * frames : (i + 1) * frames] for i in range(batch)]).to(device)


def worst_stem_db(ours, ref) -> float:
    """The worst deviation over segments and stems, each relative to its own stem's energy."""
    import torch

    ours, ref = ours.float(), ref.float()
    error = (ours - ref).flatten(2).norm(dim=-1) / ref.flatten(2).norm(dim=-1).clamp_min(1e-30)
    return 20 * float(torch.log10(error.max().clamp_min(1e-30)))


def timed(forward: Callable, inputs, device, repeats: int) -> list[float]:
    import torch

    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        forward(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    import torch
    from throughput import build_model, device_name

    from daw_bridge.separation.engine import strict_float32

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=16, help="segments per pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", choices=("full", "small"), default="full")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes)")
    parser.add_argument("--budget", type=float, default=240, help="seconds before skipping")
    args = parser.parse_args()
    started = time.perf_counter()
    device = torch.device(args.device)
    model = build_model(args.model).to(device)
    inputs = batch_of_music(model, args.batch, device)
    with torch.inference_mode(), strict_float32():
        exact = model(inputs)

    eager = model.__call__
    tuned = {"benchmark": True}
    candidates: list[tuple[str, Callable, dict]] = [
        ("eager, TF32 convolutions (PyTorch's default; the engine today)", eager, {}),
        ("eager + cuDNN autotuner (cudnn.benchmark)", eager, tuned),
        ("eager + autotuner + group norm by reduction", eager, {**tuned, "group_norm": True}),
        ("eager + autotuner + TF32 matrix products", eager, {**tuned, "tf32_matmul": True}),
    ]
    if device.type == "cuda":
        half = {**tuned, "half": torch.float16}
        candidates += [
            ("eager float16 autocast + autotuner", eager, half),
            (
                "eager float16 + autotuner + group norm by reduction",
                eager,
                {**half, "group_norm": True},
            ),
        ]
    if args.compile:  # the full network did not finish compiling in 100 s on an H100 machine
        compiled = torch.compile(model, dynamic=False)
        candidates.append(("torch.compile (inductor) + autotuner", compiled, tuned))

    seconds_per_pass = args.batch * float(model.segment)
    print(
        f"htdemucs ({args.model}), {args.batch} segments per pass, forward only, "
        f"device {device_name(device)}, torch {torch.__version__}\n"
    )
    print("| setting | ms / segment | audio s / s | first pass | worst stem vs strict float32 |")
    print("|---|---:|---:|---:|---:|")
    for label, forward, options in candidates:
        if time.perf_counter() - started > args.budget:
            print(f"| {label} | skipped: --budget {args.budget:g} s spent | | | |")
            continue
        try:
            with torch.inference_mode(), settings(**options):
                first = timed(forward, inputs, device, 1)[0]  # compiles, plans, autotunes
                forward(inputs)
                times = timed(forward, inputs, device, args.repeats)
                out = forward(inputs)
        except Exception as error:  # an experiment: report and go on to the next
            print(f"| {label} | failed: {type(error).__name__}: {str(error)[:120]} | | | |")
            continue
        median = statistics.median(times)
        print(
            f"| {label} | {1000 * median / args.batch:.1f} | {seconds_per_pass / median:.0f} | "
            f"{first:.1f} s | {worst_stem_db(out, exact):.1f} dB |",
            flush=True,
        )
    if device.type == "cuda":
        copy_to_host(model, device)
    return 0


#: Frames per piece of :func:`_staged`: 4 stems x 2 channels x 4 bytes x 2**20 = 32 MB.
_STAGING_FRAMES = 1 << 20


def _staged(stems, staging, out):
    """Copy ``stems`` to ``out`` piece by piece through one pinned ``staging`` buffer.

    Tells apart the two suspects for a slow pageable copy: the driver's own staging
    (this is as fast as pinned if that was it) and first-touch page faults of the
    new destination (this stays slow, and the pre-touched copy above is fast).
    """
    frames = stems.shape[-1]
    for start in range(0, frames, _STAGING_FRAMES):
        piece = stems[..., start : start + _STAGING_FRAMES]
        buffer = staging[: piece.numel()].view(piece.shape)
        buffer.copy_(piece)
        out[..., start : start + piece.shape[-1]].copy_(buffer)
    return out


def copy_to_host(model, device, seconds: float = 600) -> None:
    """The engine's last step on a GPU: the finished stems of a whole clip to the host."""
    import torch

    frames = int(seconds * model.samplerate)
    stems = torch.randn(len(model.sources), model.audio_channels, frames, device=device)
    megabytes = stems.numel() * 4 / 1e6
    print(f"\nStems of a {seconds:g} s clip to the host ({megabytes:.0f} MB):\n")
    print("| copy | first | then (median of 3) |")
    print("|---|---:|---:|")
    touched = torch.zeros(stems.shape)  # its pages are faulted in before any timing
    staging = torch.empty(_STAGING_FRAMES * stems.shape[0] * stems.shape[1], pin_memory=True)
    ways = {
        "`.cpu()` (pageable; the engine today)": lambda: stems.cpu(),
        "into pinned memory (cached by PyTorch's host allocator)": lambda: torch.empty(
            stems.shape, pin_memory=True
        ).copy_(stems),
        "into pageable memory whose pages were touched before": lambda: touched.copy_(stems),
        "through a reused 32 MB pinned buffer into new pageable memory": lambda: _staged(
            stems, staging, torch.empty(stems.shape)
        ),
    }
    for label, copy in ways.items():
        times = timed(lambda _, copy=copy: copy(), None, device, 4)
        print(
            f"| {label} | {1000 * times[0]:.0f} ms | {1000 * statistics.median(times[1:]):.0f} ms |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
