"""Streaming separation: bounded memory, same numbers as the whole-mix path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import daw_bridge.audio.io as audio_io
from daw_bridge.audio.io import read_span
from daw_bridge.errors import CancelledError
from daw_bridge.separation.engine import DemucsEngine, DemucsSeparator
from daw_bridge.separation.pipeline import split_file, split_span
from tests.conftest import mix_of, noise, tiny_htdemucs, write_wav

SR = 44100


def blocks_of(mix: torch.Tensor, size: int):
    for start in range(0, mix.shape[-1], size):
        yield mix[:, start : start + size]


@pytest.mark.parametrize(
    ("seconds", "overlap", "batch_size", "shifts", "block"),
    [
        (2.65, 0.25, 1, 0, 4410),
        (2.65, 0.5, 2, 0, 100_000),
        (0.4, 0.25, 1, 0, 1000),
        (3.0, 0.0, 3, 0, 7777),
        (2.3, 0.25, 1, 2, 5000),
    ],
)
def test_stream_equals_whole_mix(seconds, overlap, batch_size, shifts, block):
    model = tiny_htdemucs(seed=1)
    mix = mix_of(seconds)

    def engine():
        return DemucsEngine(
            [model], overlap=overlap, batch_size=batch_size, shifts=shifts, seed=5,
            device="cpu", backend="torch",
        )  # fmt: skip

    whole = engine().apply(mix)
    streamed = torch.cat(list(engine().apply_stream(blocks_of(mix, block), mix.shape[-1])), -1)
    assert streamed.shape == whole.shape
    assert torch.allclose(streamed, whole, rtol=0, atol=1e-6)


def test_stream_of_a_bag_with_different_segments():
    models = [tiny_htdemucs(seed=2), tiny_htdemucs(seed=3, segment=0.8)]
    weights = [[1.0, 0.0, 0.5, 1.0], [0.0, 1.0, 0.5, 1.0]]
    mix = mix_of(2.0)
    whole = DemucsEngine(models, weights, device="cpu", backend="torch").apply(mix)
    engine = DemucsEngine(models, weights, device="cpu", backend="torch")
    streamed = torch.cat(list(engine.apply_stream(blocks_of(mix, 3000))), -1)
    assert torch.allclose(streamed, whole, rtol=0, atol=1e-6)


def test_stream_reads_ahead_only_about_a_segment():
    model = tiny_htdemucs(seed=1)  # 1 s segments
    mix = mix_of(12.0)
    read = {"frames": 0}

    def counted():
        for block in blocks_of(mix, 2205):
            read["frames"] += block.shape[-1]
            yield block

    engine = DemucsEngine([model], device="cpu", backend="torch")
    produced = 0
    for piece in engine.apply_stream(counted(), mix.shape[-1]):
        produced += piece.shape[-1]
        assert read["frames"] - produced <= 2.5 * SR  # look-ahead, not the whole mix
    assert produced == mix.shape[-1]


def test_progress_and_cancel_while_streaming():
    engine = DemucsEngine([tiny_htdemucs(seed=1)], batch_size=1, device="cpu", backend="torch")
    fractions: list[float] = []
    list(engine.apply_stream(blocks_of(mix_of(3.0), 10_000), 3 * SR, fractions.append))
    assert fractions == pytest.approx([0.25, 0.5, 0.75, 1.0])
    with pytest.raises(CancelledError):
        list(engine.apply_stream(blocks_of(mix_of(3.0), 10_000), 3 * SR, None, lambda: True))


@pytest.fixture(scope="module")
def separator():
    return DemucsSeparator("tiny", DemucsEngine([tiny_htdemucs(1)], device="cpu", backend="torch"))


@pytest.mark.parametrize(
    ("samplerate", "channels", "two_stems"),
    [(44100, 2, None), (48000, 2, None), (22050, 1, None), (32000, 2, "vocals")],
)
def test_file_streaming_matches_the_in_memory_split(
    tmp_path, monkeypatch, separator, samplerate, channels, two_stems
):
    monkeypatch.setattr(audio_io, "BLOCK_FRAMES", 20_000)  # many blocks on a short file
    source = write_wav(tmp_path / "in.wav", noise(channels, 2.3, samplerate, seed=3), samplerate)
    streamed = split_file(
        source, separator, tmp_path / "a", start=0.1, duration=2.0, two_stems=two_stems
    )
    span = read_span(source, 0.1, 2.0)
    whole = split_span(span, separator, tmp_path / "b", two_stems=two_stems)
    assert list(streamed.stems) == list(whole.stems)
    for name in whole.stems:
        ours, theirs = read_span(streamed.stems[name]).samples, read_span(whole.stems[name]).samples
        assert ours.shape == theirs.shape == span.samples.shape
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    total = sum(read_span(p).samples for p in streamed.stems.values())
    if two_stems is None:
        np.testing.assert_allclose(total, span.samples, atol=1e-6)
    manifest = json.loads(streamed.manifest.read_text())
    assert manifest["input"]["span_sha256"] == span.content_sha256()
    assert manifest["frames"] == span.frames


def test_a_cancelled_stream_leaves_no_files(tmp_path, separator):
    source = write_wav(tmp_path / "in.wav", noise(2, 3.0))
    calls = {"n": 0}

    def later() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(CancelledError):
        split_file(source, separator, tmp_path / "out", should_cancel=later)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_damage_deep_in_a_file_stops_the_stream_without_stems(tmp_path, monkeypatch, separator):
    monkeypatch.setattr(audio_io, "BLOCK_FRAMES", 10_000)
    samples = noise(2, 2.0)
    samples[1, 70_000] = np.nan
    source = write_wav(tmp_path / "in.wav", samples)
    with pytest.raises(Exception, match="NaN or infinite samples"):
        split_file(source, separator, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
