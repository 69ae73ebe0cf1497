"""How fast each MSST architecture separates on this CPU, at full size, next to HTDemucs.

Each public config's network is built at full size with random weights (the
same compute as the trained checkpoint) and separates a short clip of an
evaluation song through :class:`MsstSeparator` with the config's own chunk
size, overlap and batch size. A clip shorter than one step still costs one
full chunk (chunks are padded to full size), so the clip's own speed says
little; what a user waits for is the steady state. Every chunk costs the same
compute, so the benchmark divides the clip's time by the chunks it ran and
reports, from that time per chunk:

- audio s/s: seconds of a long song separated per second (a new chunk starts
  every ``chunk_size / num_overlap`` samples), and the real-time factor
  (processing time over audio time, so above 1 is slower than real time);
- a 3-minute song: the chunks MSST's ``demix`` runs over 180 s (reflect
  padding included) times the time per chunk.

HTDemucs runs through daw-bridge's default path, ``load_separator`` on a
full-size checkpoint written in the official release format to a temporary
folder (segments of 7.8 s, overlap 0.25, the default CPU backend, exported
once before timing). ``bs_roformer_4stem``'s config is a release asset, not in
``../shared``: it is rebuilt from MSST's MUSDB18 BS-RoFormer config with the
release's settings (dim 384, depth 8, 4 stems, hop 441, MLP factor 2, chunks
of 485100 samples, overlap 2, batch 1), as the file name and public copies of
it say.

    python benchmarks/msst_speed.py                         # every model, 3 s clip, 2 threads
    python benchmarks/msst_speed.py --models scnet,htdemucs --seconds 1
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"
CONFIGS = SHARED / "models" / "msst-configs"
SR = 44100
SONG_SECONDS = 180.0

#: Benchmark name -> the public config it uses (``None``: built by :func:`_config`).
MODELS: dict[str, str | None] = {
    "bs_roformer_vocals": "model_bs_roformer_ep_317_sdr_12.9755.yaml",
    "mel_roformer_vocals_kj": "config_vocals_mel_band_roformer_kj.yaml",
    "bs_roformer_4stem": None,
    "scnet": "config_musdb18_scnet.yaml",
    "scnet_large": "config_musdb18_scnet_large.yaml",
    "mdx23c_vocals": "config_vocals_mdx23c.yaml",
    "drumsep": "config_drumsep.yaml",
    "htdemucs": None,
}


@dataclass
class Result:
    """One model's figures; ``per_chunk`` and ``song_chunks`` give the steady state."""

    name: str
    config: str
    kind: str
    params_m: float
    chunking: str
    chunks: int
    wall_s: float
    step_s: float
    song_chunks: int

    @property
    def per_chunk(self) -> float:
        return self.wall_s / self.chunks

    @property
    def audio_per_s(self) -> float:
        return self.step_s / self.per_chunk

    def row(self) -> str:
        song_min = self.song_chunks * self.per_chunk / 60
        return (
            f"| {self.name} | {self.kind} | {self.params_m:.1f} M | {self.chunking} | "
            f"{self.chunks} | {self.wall_s:.1f} s | {self.per_chunk:.1f} s | "
            f"{self.audio_per_s:.3f} | {1 / self.audio_per_s:.1f} | {song_min:.0f} min |"
        )


def cpu_description() -> str:
    """The CPU's model name and the vector/matrix extensions that decide CPU speed."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
    present = [flag for flag in wanted if flag in flags]
    return f"{name}, {os.cpu_count()} logical CPUs, flags: {' '.join(present) or 'none of'}" + (
        "" if present else " " + " ".join(wanted)
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def clip(seconds: float) -> np.ndarray:
    """The first ``seconds`` of an evaluation mixture (noise if there is none)."""
    frames = int(seconds * SR)
    songs = sorted((SHARED / "eval" / "musdb18-7-test").glob("*/mixture.flac"))
    if not songs:
        rng = np.random.default_rng(0)
        return (0.1 * rng.standard_normal((2, frames))).astype(np.float32)
    import soundfile

    audio, rate = soundfile.read(songs[0], dtype="float32", always_2d=True, frames=frames)
    assert rate == SR
    return np.ascontiguousarray(audio.T)


def four_stem_config() -> dict[str, Any]:
    """ZFTurbo's 4-stem BS-RoFormer config (release v1.0.12), rebuilt from the MUSDB18 one."""
    from daw_bridge.models.msst.config import load_config

    config = copy.deepcopy(load_config(CONFIGS / "config_musdb18_bs_roformer.yaml"))
    config["model"].update(
        dim=384, depth=8, num_stems=4, stft_hop_length=441, mlp_expansion_factor=2
    )
    config["audio"].update(chunk_size=485100, hop_length=441)
    config["training"].update(
        instruments=["drums", "bass", "other", "vocals"], target_instrument=None
    )
    config["inference"].update(batch_size=1, num_overlap=2)
    return config


def chunks_over(chunking: Any, frames: int) -> int:
    """How many chunks MSST's ``demix`` runs over ``frames`` samples (as ``demix`` cuts)."""
    border = chunking.border
    total = frames + 2 * border if frames > 2 * border and border > 0 else frames
    return len(range(0, total, chunking.step))


def run_msst(name: str, mix: np.ndarray) -> Result:
    import torch

    from daw_bridge.models.msst.config import load_config
    from daw_bridge.models.msst.separator import MsstSeparator, build_model, model_type_of

    source = MODELS[name]
    config = four_stem_config() if source is None else load_config(CONFIGS / source)
    model_type = model_type_of(config)
    torch.manual_seed(0)
    separator = MsstSeparator(name, model_type, config, build_model(model_type, config))
    chunking = separator.chunking
    started = time.perf_counter()
    separator.separate(mix)
    wall = time.perf_counter() - started
    return Result(
        name=name,
        config=source or "config_bs_roformer_384_8_2_485100.yaml (rebuilt)",
        kind=model_type if model_type != "htdemucs" else "hdemucs",
        params_m=sum(p.numel() for p in separator.model.parameters()) / 1e6,
        chunking=(
            f"{chunking.chunk_size / SR:.1f} s / {chunking.num_overlap} / {chunking.batch_size}"
        ),
        chunks=chunks_over(chunking, mix.shape[1]),
        wall_s=wall,
        step_s=chunking.step / SR,
        song_chunks=chunks_over(chunking, int(SONG_SECONDS * SR)),
    )


def build_msst(name: str) -> tuple[Any, Any]:
    """The full-size network for ``name`` with seeded random weights, and its chunking."""
    import torch

    from daw_bridge.models.msst.config import load_config
    from daw_bridge.models.msst.separator import build_model, chunking_of, model_type_of

    source = MODELS[name]
    config = four_stem_config() if source is None else load_config(CONFIGS / source)
    model_type = model_type_of(config)
    torch.manual_seed(0)
    return build_model(model_type, config).eval(), chunking_of(model_type, config)


def compare_openvino(name: str, fraction: float, rounds: int) -> str:
    """Torch against :class:`OpenVinoNetwork` on the same weights and input: a
    ``fraction`` of one chunk of music, batch 1, best of ``rounds`` alternating runs."""
    import torch

    from daw_bridge.models.msst.accel import OpenVinoNetwork

    model, chunking = build_msst(name)
    frames = int(chunking.chunk_size * fraction)
    mix = torch.from_numpy(clip(frames / SR + 0.01)[:, :frames])[None]
    try:
        started = time.perf_counter()
        network = OpenVinoNetwork(model)
        with torch.inference_mode():
            network(mix)  # converts and compiles for this shape
        convert_s = time.perf_counter() - started
    except Exception as error:  # conversion errors come in many types
        return f"| {name} | {frames / SR:.2f} s | failed: {type(error).__name__}: {error} |"
    torch_s, openvino_s = [], []
    with torch.inference_mode():
        for _ in range(rounds):
            started = time.perf_counter()
            reference = model(mix)
            torch_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            ours = network(mix)
            openvino_s.append(time.perf_counter() - started)
    error = float((ours - reference).norm() / reference.norm())
    db = 20 * math.log10(error) if error > 0 else float("-inf")
    return (
        f"| {name} | {frames / SR:.2f} s | {convert_s:.0f} s | {min(torch_s):.1f} s | "
        f"{min(openvino_s):.1f} s | {min(torch_s) / min(openvino_s):.2f}x | {db:.1f} dB |"
    )


def full_size_htdemucs_checkpoint(folder: Path) -> Path:
    """Full-size htdemucs with random weights, saved as demucs's release step saves it."""
    import json
    from fractions import Fraction

    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import save_with_checksum, serialize_model
    from omegaconf import OmegaConf

    spec = json.loads((SHARED / "models" / "htdemucs_kwargs.json").read_text())
    torch.manual_seed(0)
    model = HTDemucs(**spec["kwargs"], segment=Fraction(*spec["segment_fraction"]))
    package = serialize_model(model, OmegaConf.create({"epochs": 1}), half=True)
    save_with_checksum(package, folder / "955717e8.th")
    return next(folder.glob("955717e8-*.th"))


def run_htdemucs(mix: np.ndarray) -> Result:
    from daw_bridge.models.loader import load_separator

    with tempfile.TemporaryDirectory(prefix="msst-speed-") as folder:
        # The exported core goes to a temporary cache, not the user's.
        previous = os.environ.get("DAW_BRIDGE_CACHE_DIR")
        os.environ["DAW_BRIDGE_CACHE_DIR"] = folder
        try:
            separator = load_separator(
                str(full_size_htdemucs_checkpoint(Path(folder))), device="cpu"
            )
            engine = separator.engine
            engine.prepare()  # the one-off export, not part of the timing
            model = engine.models[0]
            started = time.perf_counter()
            separator.separate(mix)
            wall = time.perf_counter() - started
        finally:
            if previous is None:
                os.environ.pop("DAW_BRIDGE_CACHE_DIR", None)
            else:
                os.environ["DAW_BRIDGE_CACHE_DIR"] = previous
    stride = engine._stride(model)
    segment = engine._segment_length(model)
    return Result(
        name="htdemucs",
        config=f"official format, backend {engine.backend}",
        kind=f"htdemucs ({engine.backend})",
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        chunking=f"{segment / SR:.1f} s / overlap {engine.overlap} / {engine.batch_size or 1}",
        chunks=len(range(0, mix.shape[1], stride)),
        wall_s=wall,
        step_s=stride / SR,
        song_chunks=math.ceil(SONG_SECONDS * SR / stride),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--openvino",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="instead: torch vs OpenVINO on this fraction of a chunk (e.g. 0.25)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds for --openvino")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: use {', '.join(MODELS)}")
    mix = clip(args.seconds)
    print(
        f"{cpu_description()}\ntorch {torch.__version__}, {args.threads} threads; "
        f"{args.seconds:g} s of a MUSDB18 test song; {load_average()} at start\n",
        flush=True,
    )
    if args.openvino:
        print("| model | input | convert + compile | torch | OpenVINO | speed | relative error |")
        print("|---|---:|---:|---:|---:|---:|---:|", flush=True)
        for name in names:
            if name == "htdemucs":
                continue  # daw-bridge's own backend: benchmarks/throughput.py
            print(compare_openvino(name, args.openvino, args.rounds), flush=True)
        print(f"\n{load_average()} at end")
        return 0
    header = (
        "| model | type | parameters | chunk / overlap / batch | chunks run | time | "
        "per chunk | audio s/s | RTF | 3-min song |\n"
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for name in names:
        result = run_htdemucs(mix) if name == "htdemucs" else run_msst(name, mix)
        rows.append(result.row())
        print(f"{result.row()}  <- {result.config}", flush=True)
    print(f"\n{load_average()} at end\n\n{header}\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
