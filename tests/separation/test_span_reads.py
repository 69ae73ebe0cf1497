"""A short span of a long file costs the span: the split reads it, not the file."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from daw_bridge.audio.io import read_span
from daw_bridge.separation.pipeline import split_file

SR = 44100

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/io").exists(), reason="counts bytes read with Linux's /proc/self/io"
)


class Silence:
    """A separator that costs nothing: every stem silent, the residual makes ``other``."""

    name = "silence"
    sources = ("drums", "bass", "other", "vocals")
    samplerate = SR

    def separate(self, mix, progress=None, should_cancel=None):
        return np.zeros((4, *mix.shape), dtype=np.float32)


def bytes_read() -> int:
    """Bytes this process has read so far, from files and pipes alike."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def long_wav(path: Path, seconds: float) -> Path:
    """A 16-bit stereo WAV: noise, so no block of it is like another."""
    rng = np.random.default_rng(0)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(SR)
        for _ in range(int(seconds)):
            handle.writeframes(rng.integers(-3000, 3000, 2 * SR, dtype="<i2").tobytes())
    return path


def test_splitting_one_second_of_a_long_file_reads_about_one_second(tmp_path):
    source = long_wav(tmp_path / "concert.wav", seconds=90)
    split_file(long_wav(tmp_path / "warm-up.wav", 2), Silence(), tmp_path / "warm-up")
    before = bytes_read()
    result = split_file(source, Silence(), tmp_path / "out", start=60.0, duration=1.0)
    read = bytes_read() - before
    span_bytes = SR * 2 * 2
    assert read < 4 * span_bytes < source.stat().st_size / 20
    manifest = json.loads(result.manifest.read_text())["input"]
    assert manifest["span_sha256"] == read_span(source, 60.0, 1.0).content_sha256()
    assert manifest["file_size"] == source.stat().st_size
