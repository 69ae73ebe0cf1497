"""How far each precision path moves each stem, and what that can cost in SDR.

A deviation d added to a separation whose error is e changes its SDR by at most
20·log10((|e| + |d|) / |e|). We measure d per song and per stem, relative to
that stem's own energy (a quiet stem is where reduced precision shows), on
the evaluation songs, against the exact float32 output of the same weights:

- on the CPU: the ``openvino``, ``openvino-bf16`` and ``openvino-f16`` (where
  the CPU computes bfloat16 or float16) and ``onnxruntime`` backends against
  ``torch`` (``apply_model``'s numbers);
- on CUDA: ``cuda-float32`` (PyTorch's defaults, TF32 convolutions),
  ``cuda-float16`` and ``cuda-bfloat16`` autocast against float32 with TF32 off.
  ``cuda-bfloat16+f32:encoder/decoder`` keeps the named sub-modules in float32,
  to find where the error comes from.

    python benchmarks/precision.py                              # CPU paths, 50 songs
    python benchmarks/precision.py --device cuda --weights trained.th
    python benchmarks/precision.py --paths openvino --limit 5 --json out.json
    python benchmarks/precision.py --report out.json            # the table again

``--weights`` takes a file from ``structured_weights.py`` (random weights make
attention nearly uniform and can understate reduced precision's error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_songs import DEFAULT_SONGS, STEMS, read_audio
from structured_weights import load_weights
from throughput import build_model, measurable_backends

from daw_bridge.errors import InvalidOptionError

#: The deviation a path may have to become a default: below 0.1 dB of SDR change
#: for any separation up to 11 dB SDR (issue 17).
BOUND_DB = -50.0


def sdr_change_bound(deviation_db: float, sdr_db: float) -> float:
    """Largest SDR change a deviation (dB re the stem) can cause on a separation of ``sdr_db``."""
    return 20 * np.log10(1 + 10 ** ((deviation_db + sdr_db) / 20))


def stem_deviations_db(ours: np.ndarray, exact: np.ndarray) -> list[float]:
    """Per stem: 20·log10(‖ours − exact‖ / ‖exact‖), arrays ``(stems, channels, frames)``."""
    return [
        float(20 * np.log10(max(np.linalg.norm(o - e) / np.linalg.norm(e), 1e-30)))
        for o, e in zip(ours, exact, strict=True)
    ]


def standardised(mix: np.ndarray):
    """``(mix − mean) / std`` of its mono sum, as a tensor, with ``mean`` and ``std``."""
    import torch

    mono = mix.mean(0)
    mean, std = float(mono.mean()), float(mono.std()) + 1e-8
    return torch.from_numpy((mix - mean) / std), mean, std


def read_mixtures(root: Path, limit: int = 0) -> list[tuple[str, np.ndarray]]:
    songs = []
    for path in sorted(root.glob("*/mixture.flac")):
        songs.append((path.parent.name, read_audio(path)))
        if limit and len(songs) == limit:
            break
    if not songs:
        raise SystemExit(f"No */mixture.flac under {root}.")
    return songs


@contextlib.contextmanager
def float32_modules(model, names: list[str]):
    """Run the named sub-modules of ``model`` outside autocast, in float32."""
    import torch

    patched = []
    modules = []
    for name in names:  # a ModuleList is never called itself: patch its layers
        module = model.get_submodule(name)
        modules += list(module) if isinstance(module, torch.nn.ModuleList) else [module]
    for module in modules:
        original = module.forward

        def forward(*args, _original=original, **kwargs):
            def up(value):
                return (
                    value.float() if torch.is_tensor(value) and value.is_floating_point() else value
                )

            with torch.autocast("cuda", enabled=False):
                return _original(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

        module.forward = forward
        patched.append((module, original))
    try:
        yield
    finally:
        for module, original in patched:
            module.forward = original


class PrecisionPath:
    """One way of running the model: its engine, and how to enter its numeric mode."""

    def __init__(self, name: str, model, device: str) -> None:
        import torch

        from daw_bridge.separation.engine import DemucsEngine

        self.name = name
        base, _, keep = name.partition("+f32:")
        self.keep = [k for k in keep.split("/") if k]
        self.model = model
        self.strict = base == "cuda-strict"
        if base.startswith("cuda-"):
            dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(base[5:])
            self.engine = DemucsEngine(
                [model], device=device, backend="torch", half=dtype is not None,
                half_dtype=dtype or torch.float16,
            )  # fmt: skip
        else:
            self.engine = DemucsEngine([model], device="cpu", backend=base)

    def separate(self, mix) -> np.ndarray:
        from daw_bridge.separation.engine import strict_float32

        strict = strict_float32() if self.strict else contextlib.nullcontext()
        with strict, float32_modules(self.model, self.keep):
            return self.engine.apply(mix).numpy()


def default_paths(device: str) -> str:
    if device.startswith("cuda"):
        return "cuda-float32,cuda-float16,cuda-bfloat16"
    return ",".join(
        measurable_backends(["openvino", "openvino-bf16", "openvino-f16", "onnxruntime"])
    )


def main() -> int:

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=Path, default=DEFAULT_SONGS)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU paths")
    parser.add_argument("--paths", help="comma-separated (default: this device's paths)")
    parser.add_argument("--weights", type=Path, help="from structured_weights.py (default random)")
    parser.add_argument("--model", choices=("full", "small"), default="full")
    parser.add_argument("--json", type=Path, help="write every song's figures here (as it goes)")
    parser.add_argument("--report", type=Path, help="only print the table of such a file")
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        report(saved["rows"], list(dict.fromkeys(r["path"] for r in saved["rows"])), saved["model"],
               len({r["song"] for r in saved["rows"]}), saved["reference"])  # fmt: skip
        return 0

    model = load_weights(args.weights) if args.weights else build_model(args.model)
    weights = f"trained ({args.weights.name})" if args.weights else "random"
    label = f"{args.model}-size htdemucs, {weights} weights"
    cuda = args.device.startswith("cuda")
    reference = PrecisionPath("cuda-strict" if cuda else "torch", model, args.device)
    try:
        paths = [
            PrecisionPath(n, model, args.device)
            for n in (args.paths or default_paths(args.device)).split(",")
        ]
    except InvalidOptionError as error:  # e.g. a precision this CPU does not compute
        raise SystemExit(str(error)) from None
    songs = read_mixtures(args.songs, args.limit)
    rows = []
    started = time.perf_counter()
    for number, (song, mix) in enumerate(songs, 1):
        normalised, mean, std = standardised(mix)
        exact = reference.separate(normalised) * std + mean
        for path in paths:
            ours = path.separate(normalised) * std + mean
            (whole_db,) = stem_deviations_db(ours[None], exact[None])
            for stem, db in zip(STEMS, stem_deviations_db(ours, exact), strict=True):
                rows.append({
                    "path": path.name, "song": song, "stem": stem,
                    "deviation_db": db, "whole_db": whole_db,
                })  # fmt: skip
        print(f"{number}/{len(songs)} {song} ({time.perf_counter() - started:.0f} s)", flush=True)
        if args.json:  # after every song, so a run stopped early keeps what it measured
            saved = {"model": label, "device": args.device, "reference": reference.name}
            args.json.write_text(json.dumps({**saved, "rows": rows}))
    report(rows, [p.name for p in paths], label, len(songs), reference.name)
    return 0


def report(rows: list[dict], names: list[str], model: str, songs: int, reference: str) -> None:
    print(
        f"\nPer-stem deviation from `{reference}` (dB re each stem's own energy), {model}, "
        f"{songs} songs; the bound is the largest SDR change it "
        f"can cause on a separation of 9 / 11 dB SDR\n"
    )
    print("| path | worst stem (song) | median | drums / bass / other / vocals worst | "
          "whole mix (median) | SDR change ≤ (9 / 11 dB) | within -50 dB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in names:
        mine = [r for r in rows if r["path"] == name]
        broken = [r for r in mine if math.isnan(r["deviation_db"])]
        if broken:  # NaN compares false with everything: say it instead of ranking it
            print(
                f"| `{name}` | **NaN** in {len(broken)} of {len(mine)} stems (first: "
                f"{broken[0]['stem']}, {broken[0]['song']}): the path overflowed | - | - | - | "
                "unbounded | no |"
            )
            continue
        worst = max(mine, key=lambda r: r["deviation_db"])
        per_stem = [max(r["deviation_db"] for r in mine if r["stem"] == s) for s in STEMS]
        whole = statistics.median(r["whole_db"] for r in mine)
        bound = [sdr_change_bound(worst["deviation_db"], s) for s in (9, 11)]
        print(
            f"| `{name}` | {worst['deviation_db']:.1f} dB ({worst['stem']}, {worst['song']}) | "
            f"{statistics.median(r['deviation_db'] for r in mine):.1f} dB | "
            f"{' / '.join(f'{d:.0f}' for d in per_stem)} | {whole:.1f} dB | "
            f"{bound[0]:.3f} / {bound[1]:.3f} dB | "
            f"{'yes' if worst['deviation_db'] <= BOUND_DB else 'no'} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
