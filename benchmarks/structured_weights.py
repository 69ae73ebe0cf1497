"""Full-size htdemucs weights with real structure: a few hundred training steps.

Random weights make attention nearly uniform, which can understate what reduced
precision costs (issue 17). No real checkpoint can be had here, so this trains
the full-size architecture briefly on the evaluation songs' stems: enough to
shape its attention, not to make a useful separator. ``precision.py --weights``
then measures the precision paths on these weights.

    python benchmarks/structured_weights.py --steps 300 --out trained.th   # on a GPU
    python benchmarks/structured_weights.py --model small --steps 5 --device cpu --out t.th

Each step mixes stems from randomly chosen songs (demucs's remix augmentation),
with random gains, channel swaps and crops, standardised like the inference
input, and takes an Adam step on the L1 loss (bfloat16 autocast on CUDA, float32
master weights). The printed attention entropy (1.0: uniform; lower: the
attention picks what it looks at) shows the structure the training gave.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_songs import DEFAULT_SONGS, STEMS, read_audio
from throughput import SR, build_model


def read_stems(root: Path, limit: int = 0) -> list[np.ndarray]:
    """Each song's stems as one float32 array (4, 2, frames); any libsndfile format."""
    songs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [next(iter(sorted(folder.glob(f"{stem}.*"))), None) for stem in STEMS]
        if None in files:
            continue
        audio = [read_audio(f) for f in files]
        frames = min(a.shape[1] for a in audio)
        songs.append(np.stack([a[:, :frames] for a in audio]))
        if limit and len(songs) == limit:
            break
    if not songs:
        raise SystemExit(f"No song folders with {'/'.join(STEMS)} files under {root}.")
    return songs


def training_batch(songs: list[np.ndarray], size: int, frames: int, rng: random.Random):
    """(mix, stems) of ``size`` remixed crops, standardised by the mono mix's std."""
    import torch

    items = []
    for _ in range(size):
        stems = []
        for index in range(len(STEMS)):
            song = rng.choice(songs)
            start = rng.randrange(0, song.shape[-1] - frames + 1)
            stem = song[index, :, start : start + frames] * rng.uniform(0.25, 1.25)
            if rng.random() < 0.5:
                stem = stem[::-1]  # swap channels
            stems.append(stem * rng.choice((-1.0, 1.0)))
        items.append(np.stack(stems))
    stems = torch.from_numpy(np.ascontiguousarray(np.stack(items), dtype=np.float32))
    mix = stems.sum(1)
    std = mix.mean(1).std(-1)[:, None, None] + 1e-5
    return mix / std, stems / std[:, None]


def attention_entropy(model, mix) -> float:
    """Mean entropy of the transformer's attention rows, over log(keys) (1.0 = uniform)."""
    import torch

    values: list[float] = []
    busy = False

    def hook(module, args, kwargs, output):
        nonlocal busy
        if busy:
            return
        busy = True
        try:
            options = {**kwargs, "need_weights": True, "average_attn_weights": True}
            weights = module(*args, **options)[1].float().clamp_min(1e-12)
            entropy = -(weights * weights.log()).sum(-1) / np.log(weights.shape[-1])
            values.append(float(entropy.mean()))
        finally:
            busy = False

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, torch.nn.MultiheadAttention)
    ]
    try:
        with torch.inference_mode():
            model(mix)
    finally:
        for handle in handles:
            handle.remove()
    return float(np.mean(values))


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=Path, default=DEFAULT_SONGS)
    parser.add_argument("--limit", type=int, default=0, help="at most this many songs")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=float, default=6.0, help="seconds per example")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", choices=("full", "small"), default="full")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    device = torch.device(args.device)
    songs = read_stems(args.songs, args.limit)
    frames = min(int(args.crop * SR), min(s.shape[-1] for s in songs))
    model = build_model(args.model).to(device)
    segment = model.segment
    rng = random.Random(0)
    probe, _ = training_batch(songs, 1, frames, random.Random(1))
    probe = probe.to(device)
    before = attention_entropy(model.eval(), probe)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        mix, stems = (t.to(device) for t in training_batch(songs, args.batch, frames, rng))
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            estimate = model(mix)
        loss = torch.nn.functional.l1_loss(estimate.float(), stems)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == args.steps:
            recent = np.mean(losses[-25:])
            print(
                f"step {step}: L1 {recent:.4f} ({time.perf_counter() - started:.0f} s)", flush=True
            )
    model.segment = segment  # training mode set it to the crop's length
    model.eval()
    after = attention_entropy(model, probe)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": args.model,
            "state": {k: v.cpu() for k, v in model.state_dict().items()},
            "steps": args.steps,
            "losses": losses,
            "attention_entropy": [before, after],
        },
        args.out,
    )
    print(
        f"{args.steps} steps on {len(songs)} songs in {time.perf_counter() - started:.0f} s: "
        f"L1 {np.mean(losses[:25]):.4f} -> {np.mean(losses[-25:]):.4f}; attention entropy "
        f"(1 = uniform) {before:.3f} -> {after:.3f}; saved {args.out}"
    )
    return 0


def load_weights(path: Path):
    """The model saved by this script, ready for inference on the CPU."""
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(saved["model"])
    model.load_state_dict(saved["state"])
    return model.eval()


if __name__ == "__main__":
    raise SystemExit(main())
