"""Full-size MSST models: our inference against MSST's own, same weights, same song.

For each public config, the model is built at full size with random weights by
MSST (pip ``msst==0.1.0``, installed with ``--no-deps``), the same weights are
loaded into ours, and one evaluation song is separated by MSST's
``separate_audio`` (its channels, normalisation and ``demix``) and by our
``MsstSeparator``, one after the other in this process. Random weights cost the
same compute as trained ones, so the time ratio holds; the error is the largest
absolute difference over the largest absolute reference value, per stem.

    python benchmarks/msst_parity.py                          # every config, 7 s song
    python benchmarks/msst_parity.py --configs config_musdb18_scnet.yaml --seconds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"
CONFIGS = SHARED / "models" / "msst-configs"


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _song(seconds: float) -> np.ndarray:
    import soundfile

    mixture = sorted((SHARED / "eval" / "musdb18-7-test").glob("*/mixture.flac"))[0]
    audio, rate = soundfile.read(mixture, dtype="float32", always_2d=True)
    assert rate == 44100
    return np.ascontiguousarray(audio[: int(seconds * rate)].T)


def _one(name: str, mix: np.ndarray, threads: int) -> str:
    import argparse as ap

    import torch
    from ml_collections import ConfigDict
    from msst._inference import separate_audio
    from msst.utils.settings import build_model_from_config

    from daw_bridge.models.msst.config import load_config
    from daw_bridge.models.msst.separator import MsstSeparator, build_model, model_type_of

    torch.set_num_threads(threads)
    config = load_config(CONFIGS / name)
    model_type = model_type_of(config)
    torch.manual_seed(0)
    reference = build_model_from_config(model_type, ConfigDict(config)).eval()
    ours = build_model(model_type, config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    separator = MsstSeparator(name, model_type, config, ours)
    args = ap.Namespace(
        model_type=model_type,
        disable_detailed_pbar=True,
        bigshifts=1,
        use_tta=False,
        extract_instrumental=False,
    )
    started = time.perf_counter()
    theirs = separate_audio(reference, args, ConfigDict(config), "cpu", mix)
    msst_s = time.perf_counter() - started
    started = time.perf_counter()
    stems = separator.separate(mix)
    ours_s = time.perf_counter() - started
    errors = []
    for index, stem in enumerate(separator.sources):
        if stem in theirs:
            ref = theirs[stem]
            errors.append(float(np.max(np.abs(ref - stems[index])) / np.max(np.abs(ref))))
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    return (
        f"| {name} | {model_type} | {params:.1f} M | {msst_s:.1f} s | {ours_s:.1f} s | "
        f"{msst_s / ours_s:.2f}x | {max(errors):.1e} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="", help="comma-separated config file names")
    parser.add_argument("--seconds", type=float, default=7.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n] or sorted(
        p.name for p in CONFIGS.glob("*.yaml") if p.name != "config_drumsep.yaml"
    )
    mix = _song(args.seconds)
    print(f"{_cpu()}, {args.threads} threads; {args.seconds:.0f} s of a MUSDB18 test song\n")
    print("| config | type | parameters | MSST | ours | speed | max relative error |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        print(_one(name, mix, args.threads), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
