"""Does a segment's output depend on the other segments of its batch? Where?

On an H200 (PyTorch 2.11, CUDA 13.0) the tiny test network's output moved by
0.97 % when segments ran 4 to a pass instead of one, TF32 off, while on the
CPU the two agree within 5e-8. On an H100 no leaf module's output moved. The
likely cause, found afterwards on the CPU: the network's spectrum has imaginary
parts at 0 Hz, which a real signal's has not; the CPU's iSTFT ignores them, but
cuFFT's batched inverse may combine transforms of a batch, leaking them into a
neighbour (daw_bridge/separation/spectrum.py): such a leak, modelled on the
CPU, moves the tiny network's output by 1.07 %. The engine now zeroes them.

This compares each segment run alone with the same segment in a batch of 4,
through demucs's own forward and through the engine's (one-sided iSTFT input),
under several switches that change which kernels run; names the first module
or step whose output differs; and times nothing. Last, the device's inverse
STFT alone, on random spectra with and without those imaginary parts: a row
inverted alone against the same row in a batch, and against the CPU.

    python benchmarks/gpu_batch_check.py --device cuda
    python benchmarks/gpu_batch_check.py --device cpu --full   # full-size network
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


def relative(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@contextlib.contextmanager
def switches(name: str) -> Iterator[None]:
    """One setting that changes which kernels run (all keep float32 arithmetic)."""
    import torch

    from daw_bridge.separation.engine import strict_float32

    with contextlib.ExitStack() as stack:
        stack.enter_context(strict_float32())
        if name == "no cuDNN":
            enabled = torch.backends.cudnn.enabled
            torch.backends.cudnn.enabled = False
            stack.callback(setattr, torch.backends.cudnn, "enabled", enabled)
        elif name == "no fused attention path":
            fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            stack.callback(torch.backends.mha.set_fastpath_enabled, fastpath)
        elif name == "math attention only":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


#: HTDemucs's own steps outside its modules (the STFT and its inverse, masking).
_STEPS = ("_spec", "_magnitude", "_mask", "_ispec")


def step_outputs(model, inputs) -> dict[str, object]:
    """Every module's output and every HTDemucs step's, in the order they finish.

    Not only the leaves: on an H100 no leaf moved while the output moved by 1 %,
    so the cause is code that runs outside leaf modules (attention inside
    ``MultiheadAttention``, the STFT, the masking, the model's own forward).
    """
    import torch

    outputs: dict[str, object] = {}

    def keep(name, output):
        if isinstance(output, tuple) and output and torch.is_tensor(output[0]):
            output = output[0]  # MultiheadAttention: (output, weights)
        if torch.is_tensor(output):
            output = torch.view_as_real(output) if output.is_complex() else output
            outputs[name] = output.detach().clone()

    handles = [
        module.register_forward_hook(
            lambda _m, _a, output, name=name or "(the whole model)": keep(name, output)
        )
        for name, module in model.named_modules()
    ]
    for step in _STEPS:
        if hasattr(model, step):
            original = getattr(model, step)

            def recorded(*args, _original=original, _step=step, **kwargs):
                output = _original(*args, **kwargs)
                keep(f"HTDemucs.{_step}", output)
                return output

            setattr(model, step, recorded)
    try:
        with torch.inference_mode():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        for step in _STEPS:
            model.__dict__.pop(step, None)
    return outputs


def first_divergence(model, batch, threshold: float = 1e-4) -> str:
    """The first module or step (in the order they finish) whose output for segment 0
    differs alone vs batched.

    Layers that fold other axes into the batch one ((batch * n, ...), batch outermost) are
    compared on segment 0's first n rows.
    """
    alone = step_outputs(model, batch[:1])
    together = step_outputs(model, batch)
    for name, value in alone.items():
        other = together.get(name)
        rows = value.shape[0] if value.dim() else 0
        if other is None or other.shape != (len(batch) * rows, *value.shape[1:]):
            continue
        error = relative(other[:rows].float(), value.float())
        if error > threshold:
            return f"{name} ({error:.1e})"
    return "none"


def istft_batch_dependence(device: str) -> None:
    """The device's inverse STFT alone: a row inverted alone vs in a batch of 64, and vs
    the CPU, for spectra as a network makes them and made one-sided."""
    import torch

    from daw_bridge.separation.spectrum import make_one_sided_

    print("\n| n_fft | spectrum | row alone vs in a batch of 64 | device vs CPU |")
    print("|---:|---|---:|---:|")
    for n_fft in (1024, 2048, 4096):
        generator = torch.Generator().manual_seed(n_fft)
        shape = (64, n_fft // 2 + 1, 40)
        raw = torch.complex(
            torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        )
        options = dict(n_fft=n_fft, hop_length=n_fft // 4, normalized=True, center=True)
        window = torch.hann_window(n_fft)
        for label, spectrum in (
            ("as a network makes it", raw),
            ("one-sided", make_one_sided_(raw.clone(), n_fft)),
        ):
            on_cpu = torch.istft(spectrum, window=window, **options)
            batched = torch.istft(spectrum.to(device), window=window.to(device), **options)
            alone = torch.istft(spectrum[:1].to(device), window=window.to(device), **options)
            print(
                f"| {n_fft} | {label} | {relative(batched[:1].cpu(), alone.cpu()):.1e} "
                f"| {relative(batched.cpu(), on_cpu):.1e} |"
            )


def main() -> int:
    import torch
    from throughput import build_model

    from daw_bridge.separation.spectrum import give_one_sided_spectra
    from tests.conftest import tiny_htdemucs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--full", action="store_true", help="the full-size network")
    args = parser.parse_args()
    model = (build_model("full") if args.full else tiny_htdemucs(seed=1)).to(args.device).eval()
    one_sided = give_one_sided_spectra(copy.deepcopy(model))  # as the engine runs it
    frames = int(model.segment * model.samplerate)
    torch.manual_seed(1)
    batch = (0.1 * torch.randn(4, 2, frames)).to(args.device)
    print(f"{'full-size' if args.full else 'tiny'} htdemucs on {args.device}\n")
    print(
        "| setting | segment 0 alone vs in a batch of 4: demucs's forward "
        "| the engine's (one-sided iSTFT) | first module or step that differs (demucs's) |"
    )
    print("|---|---:|---:|---|")
    settings = ("float32 (TF32 off)", "no cuDNN", "no fused attention path", "math attention only")
    for name in settings:
        with switches(name), torch.inference_mode():
            theirs = relative(model(batch)[:1], model(batch[:1]))
            ours = relative(one_sided(batch)[:1], one_sided(batch[:1]))
            where = first_divergence(model, batch)
        print(f"| {name} | {theirs:.1e} | {ours:.1e} | {where} |")
    with torch.inference_mode():
        istft_batch_dependence(args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
