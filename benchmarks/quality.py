"""Separation quality on real songs, and parity with demucs's ``apply_model``.

For every Demucs checkpoint found (``../shared/models`` or ``--model-dir``), each
song of the evaluation set is separated twice on the same weights: by our engine
and by ``demucs.apply.apply_model`` (shifts=0, overlap 0.25, demucs's own input
normalisation). Both get the same SDR (see ``daw_bridge.separation.metrics``:
the MDX / Demucs-v4 "new SDR" over the whole excerpt), next to the DSP separator
and the best constant-gain baseline.

Without a real checkpoint, ``--parity`` still proves the engine on the exact
full-size htdemucs architecture with random weights (same compute as the real
model): it reports the largest relative deviation from ``apply_model``.

    python benchmarks/quality.py                # DSP + baseline, real models if found
    python benchmarks/quality.py --parity 3     # + full-size random-weight parity on 3 songs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from eval_songs import DEFAULT_SONGS, STEMS, iter_songs, score_separator  # noqa: E402

SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"


def _reference(models, weights):
    """demucs's own path: BagOfModels + apply_model on the normalised mix."""
    import torch
    from demucs.apply import BagOfModels, apply_model

    bag = BagOfModels(models, weights)

    def run(mix: np.ndarray) -> np.ndarray:
        wav = torch.from_numpy(mix)
        ref = wav.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        out = apply_model(bag, ((wav - mean) / std)[None], shifts=0, overlap=0.25)[0]
        return (out * std + mean).numpy()

    return run


def _medians(scores: dict[str, list[float]]) -> dict[str, float]:
    return {key: round(statistics.median(values), 2) for key, values in scores.items() if values}


def available_models(model_dir: Path) -> list[str]:
    from daw_bridge.models.catalog import MODELS

    return [
        name
        for name, spec in MODELS.items()
        if all((model_dir / f.filename).is_file() for f in spec.files)
    ]


def evaluate_model(name: str, model_dir: Path, songs) -> dict[str, dict[str, float]]:
    from daw_bridge.models.loader import load_separator

    ours = load_separator(name, model_dir=model_dir, download=False, device="auto")
    engine = ours.engine
    reference = _reference(engine.models, engine.weights)
    sources = list(ours.sources)

    def as_dict(stems: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(sources, stems, strict=True))

    return {
        f"{name} (daw-bridge)": _medians(
            score_separator(lambda m: as_dict(ours.separate(m)), songs)
        ),
        f"{name} (apply_model)": _medians(score_separator(lambda m: as_dict(reference(m)), songs)),
    }


def full_size_parity(songs, count: int) -> dict[str, float]:
    """Largest relative deviation from apply_model, full-size htdemucs, random weights."""
    import torch
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    from daw_bridge.separation.engine import DemucsEngine

    spec = json.loads((SHARED_MODELS / "htdemucs_kwargs.json").read_text())
    torch.manual_seed(0)
    model = HTDemucs(**spec["kwargs"], segment=Fraction(*spec["segment_fraction"])).eval()
    engine = DemucsEngine([model], device="cpu")
    worst, worst_abs, ours_s, ref_s = 0.0, 0.0, 0.0, 0.0
    for _name, mix, _refs in songs[:count]:
        wav = torch.from_numpy(mix)
        start = time.perf_counter()
        ours = engine.apply(wav)
        ours_s += time.perf_counter() - start
        start = time.perf_counter()
        ref = apply_model(model, wav[None], shifts=0, overlap=0.25)[0]
        ref_s += time.perf_counter() - start
        worst = max(worst, float((ours - ref).norm() / ref.norm()))
        worst_abs = max(worst_abs, float((ours - ref).abs().max()))
    return {
        "songs": min(count, len(songs)),
        "max_relative_error": worst,
        "max_abs_error": worst_abs,
        "ours_seconds": round(ours_s, 1),
        "apply_model_seconds": round(ref_s, 1),
    }


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| separator | " + " | ".join(STEMS) + " |", "|---|" + "---:|" * len(STEMS)]
    for label, medians in rows.items():
        cells = " | ".join(f"{medians[s]:.2f}" if s in medians else "-" for s in STEMS)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=Path, default=DEFAULT_SONGS)
    parser.add_argument("--model-dir", type=Path, default=SHARED_MODELS)
    parser.add_argument("--parity", type=int, default=0, metavar="N", help="parity on N songs")
    args = parser.parse_args()
    if not args.songs.is_dir():
        print(f"No evaluation songs at {args.songs}: nothing to measure.")
        return 0
    songs = list(iter_songs(args.songs))
    print(f"{len(songs)} songs from {args.songs}; SDR medians in dB (MDX 'new SDR').\n")

    from daw_bridge.separation.dsp import DspSeparator

    dsp = DspSeparator()
    start = time.perf_counter()
    scores = score_separator(lambda m: dict(zip(STEMS, dsp.separate(m), strict=True)), songs)
    dsp_seconds = time.perf_counter() - start
    medians = _medians(scores)
    rows = {
        "best constant gain (baseline)": {s: medians[f"{s}_baseline"] for s in STEMS},
        "dsp": {s: medians[s] for s in STEMS},
    }
    found = available_models(args.model_dir)
    for name in found:
        rows.update(evaluate_model(name, args.model_dir, songs))
    print(table(rows))
    print(f"\nDSP separator: {dsp_seconds:.1f} s for {len(songs)} songs.")
    if not found:
        print(
            f"No official checkpoint in {args.model_dir} (e.g. 955717e8-8726e21a.th for "
            "htdemucs): real-model SDR not measured."
        )
    if args.parity:
        print("\nFull-size htdemucs (random weights) vs apply_model:")
        print(json.dumps(full_size_parity(songs, args.parity), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
