"""Separation quality on real songs, and parity with demucs's ``apply_model``.

For every Demucs checkpoint found (``../shared/models`` or ``--model-dir``), each
song of the evaluation set is separated twice on the same weights: by our engine
and by ``demucs.apply.apply_model`` (shifts=0, overlap 0.25, demucs's own input
normalisation). Both get the same SDR (see ``daw_bridge.separation.metrics``:
the MDX / Demucs-v4 "new SDR" over the whole excerpt), next to the DSP separator
and the best constant-gain baseline.

Real MSST checkpoints are scored too: a ``.ckpt`` with its ``.yaml`` beside it
anywhere under the model folder, or a catalogued MSST model (``daw-bridge
models``) whose files are in the model folder or the weights cache. Each is
scored on the stems it estimates that the evaluation set holds: a vocals
model's vocals only (its second stem is the whole accompaniment, not MUSDB's
"other"); a drum-kit model's pieces match none, so it is listed as skipped.
RoFormers take minutes per song on a CPU: ``--msst-songs`` limits the songs.

Without a real checkpoint, ``--parity`` still proves the engine on the exact
full-size htdemucs architecture with random weights (same compute as the real
model): it reports the largest relative deviation from ``apply_model``.

    python benchmarks/quality.py                # DSP + baseline, real models if found
    python benchmarks/quality.py --parity 3     # + full-size random-weight parity on 3 songs
    python benchmarks/quality.py --msst-songs 5 # MSST checkpoints on the first 5 songs only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from eval_songs import (  # noqa: E402
    DEFAULT_SONGS,
    SAMPLERATE,
    STEMS,
    Song,
    iter_songs,
    score_separator,
)

SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"
#: ``(label, load)``: an MSST model found on disk, loaded only when it is scored.
MsstFound = tuple[str, Callable[[], Any]]


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


def find_msst_checkpoints(model_dir: Path) -> list[MsstFound]:
    """Every MSST model on this computer: ``.ckpt`` files with a config beside them under
    ``model_dir``, and catalogued models whose checkpoint and config are in ``model_dir``
    or the weights cache (where ``daw-bridge split --model NAME`` would find them)."""
    from daw_bridge.models.loader import load_separator
    from daw_bridge.models.msst.catalog import MSST_MODELS
    from daw_bridge.models.weights import cache_dir

    found: list[MsstFound] = []
    folders = [folder for folder in (model_dir, cache_dir()) if folder.is_dir()]
    seen = set()
    for checkpoint in sorted(model_dir.rglob("*.ckpt")) if model_dir.is_dir() else []:
        if any(checkpoint.with_suffix(suffix).is_file() for suffix in (".yaml", ".yml")):
            path = str(checkpoint)
            seen.add(checkpoint.name)
            found.append((checkpoint.name, lambda path=path: load_separator(path, device="auto")))
    for entry in MSST_MODELS.values():
        if entry.checkpoint.filename in seen:  # already found with its own config
            continue
        config = entry.config_download()
        needed = [entry.checkpoint.filename] + ([config.filename] if config else [])
        if all(any((folder / name).is_file() for folder in folders) for name in needed):
            found.append(
                (
                    entry.name,
                    lambda name=entry.name: load_separator(
                        name, model_dir=model_dir, download=False, device="auto"
                    ),
                )
            )
    return found


def evaluate_msst(label: str, load: Callable[[], Any], songs: list[Song]) -> dict | str:
    """Median SDR per stem of one MSST model, or why it cannot be scored here."""
    separator = load()
    rate = getattr(separator, "samplerate", SAMPLERATE)
    if rate != SAMPLERATE:
        return f"{label}: runs at {rate} Hz, the songs are {SAMPLERATE} Hz"
    sources = list(separator.sources)
    target = getattr(separator, "target", None)
    # A one-target model's second stem is the whole rest of the mix, not MUSDB's stem.
    stems = tuple(s for s in STEMS if s in (sources[:1] if target else sources))
    if not stems:
        return f"{label}: estimates {', '.join(sources)}, none of {', '.join(STEMS)}"

    def separate(mix: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(sources, separator.separate(mix), strict=True))

    return _medians(score_separator(separate, songs, stems))


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
    parser.add_argument(
        "--msst-songs", type=int, default=0, metavar="N", help="MSST models on N songs (0: all)"
    )
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
    msst = find_msst_checkpoints(args.model_dir)
    msst_songs = songs[: args.msst_songs] if args.msst_songs > 0 else songs
    skipped = []
    for label, load in msst:
        scored = evaluate_msst(label, load, msst_songs)
        if isinstance(scored, str):
            skipped.append(scored)
        else:
            rows[f"{label} (MSST, {len(msst_songs)} songs)"] = scored
    print(table(rows))
    print(f"\nDSP separator: {dsp_seconds:.1f} s for {len(songs)} songs.")
    if not found:
        print(
            f"No official checkpoint in {args.model_dir} (e.g. 955717e8-8726e21a.th for "
            "htdemucs): real-model SDR not measured."
        )
    for reason in skipped:
        print(f"MSST model not scored: {reason}.")
    if not msst:
        from daw_bridge.models.weights import cache_dir

        print(
            f"No MSST checkpoint in {args.model_dir} (a .ckpt with its .yaml beside it) nor a "
            f"catalogued MSST model's files there or in {cache_dir()} (e.g. "
            "'daw-bridge split --model scnet' downloads one): MSST SDR not measured."
        )
    if args.parity:
        print("\nFull-size htdemucs (random weights) vs apply_model:")
        print(json.dumps(full_size_parity(songs, args.parity), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
