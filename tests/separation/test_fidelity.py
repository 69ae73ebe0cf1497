"""Stems null against their input in every format the README lists.

The inputs are encoded by ffmpeg (its PCM and FLAC encoders, libvorbis,
libmp3lame with the LAME/Xing header), as users' tools make them, never by the
reader under test. For the check, the input and the stems are decoded by
libsndfile (soundfile) alone, as REAPER would read them: gaplessly, and integer
PCM as ``x / 2**(bits - 1)``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile
from scipy import signal

from daw_bridge.audio.io import read_span
from daw_bridge.models.loader import load_separator
from daw_bridge.separation.pipeline import split_file

SR = 44100
SECONDS = 2.0
FRAMES = int(SECONDS * SR)

#: File name: ffmpeg's encoder options. Every input format the README lists.
FORMATS = {
    "int16.wav": ["-c:a", "pcm_s16le"],
    "int24.wav": ["-c:a", "pcm_s24le"],
    "float32.wav": ["-c:a", "pcm_f32le"],
    "int16.aiff": ["-c:a", "pcm_s16be"],
    "int24.flac": ["-c:a", "flac", "-sample_fmt", "s32"],
    "vorbis.ogg": ["-c:a", "libvorbis", "-q:a", "5"],
    "lame.mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
}


def music(seconds: float = SECONDS) -> np.ndarray:
    """Stereo audio with a song's parts: bass, a panned chord, hi-hat ticks, a voice."""
    frames = int(seconds * SR)
    t = np.arange(frames) / SR
    rng = np.random.default_rng(7)
    bass = 0.25 * np.sin(2 * np.pi * 55 * t)
    chord = sum(0.06 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    ticks = np.zeros(frames)
    for start in range(0, frames - 400, SR // 8):
        ticks[start : start + 400] = 0.2 * rng.standard_normal(400) * np.exp(-np.arange(400) / 60)
    voice = 0.15 * np.sin(2 * np.pi * 440 * t + 3 * np.sin(2 * np.pi * 5.5 * t))
    left = bass + 0.8 * chord + ticks + voice
    right = bass + 0.4 * chord + 0.7 * ticks + voice
    return np.stack([left, right]).astype(np.float32)


def encode(samples: np.ndarray, path: Path, options: list[str]) -> Path:
    """Encode ``samples`` with ffmpeg, reading them as raw float32 from a pipe."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error"]
    command += ["-f", "f32le", "-ar", str(SR), "-ac", str(samples.shape[0]), "-i", "pipe:0"]
    raw = np.ascontiguousarray(samples.T, dtype="<f4").tobytes()
    subprocess.run([*command, *options, str(path)], input=raw, check=True)
    return path


def decode(path: Path) -> np.ndarray:
    """``(channels, frames)`` as libsndfile decodes the file."""
    samples, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    return samples.T


def decode_with_ffmpeg(path: Path) -> np.ndarray:
    """A second, independent gapless decoder."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error"]
    raw = subprocess.run(
        [*command, "-i", str(path), "-f", "f32le", "pipe:1"], capture_output=True, check=True
    ).stdout
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 2).T


def offset(decoded: np.ndarray, original: np.ndarray) -> int:
    """How many samples later than ``original`` the content of ``decoded`` starts."""
    correlation = signal.correlate(decoded[0], original[0], mode="full", method="fft")
    lags = signal.correlation_lags(decoded.shape[1], original.shape[1], mode="full")
    return int(lags[np.argmax(correlation)])


def lame_delay_and_padding(mp3: bytes) -> tuple[int, int]:
    """Encoder delay and end padding from the LAME tag that follows the Xing/Info header."""
    header = max(mp3.find(b"Xing"), mp3.find(b"Info"))
    assert header > 0, "no Xing/Info header"
    flags = int.from_bytes(mp3[header + 4 : header + 8], "big")
    fields = (4 if flags & 1 else 0) + (4 if flags & 2 else 0)
    fields += (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
    tag = header + 8 + fields  # 9 bytes of encoder name, then 12 bytes, then the delays
    packed = int.from_bytes(mp3[tag + 21 : tag + 24], "big")
    return packed >> 12, packed & 0xFFF


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    song = music()
    return {name: encode(song, folder / name, options) for name, options in FORMATS.items()}


@pytest.fixture(scope="module")
def long_inputs(tmp_path_factory) -> dict[str, Path]:
    """Six seconds: long enough for libsndfile's Ogg seek to land off near the end."""
    folder = tmp_path_factory.mktemp("long")
    song = music(6.0)
    return {name: encode(song, folder / name, options) for name, options in FORMATS.items()}


@pytest.fixture(scope="module")
def dsp():
    return load_separator("dsp", device="cpu")


def test_the_mp3_input_is_what_lame_makes_and_decodes_gaplessly(inputs):
    """The fixture is honest: a LAME tag with delay and padding that a gapless decode removes."""
    mp3 = inputs["lame.mp3"]
    delay, padding = lame_delay_and_padding(mp3.read_bytes())
    assert delay > 0 and padding > 0
    assert (delay + FRAMES + padding) % 1152 == 0  # whole MP3 frames, delay and padding around
    decoded = decode(mp3)
    assert decoded.shape == (2, FRAMES)
    assert offset(decoded, music()) == 0
    np.testing.assert_allclose(decoded, decode_with_ffmpeg(mp3), atol=1e-4)


@pytest.mark.parametrize("name", FORMATS)
def test_stems_have_the_input_length_and_sum_to_the_input(inputs, dsp, tmp_path, name):
    source = inputs[name]
    result = split_file(source, dsp, tmp_path / "out")
    mix = decode(source)
    assert mix.shape == (2, FRAMES)
    stems = [decode(path) for path in result.stems.values()]
    assert [stem.shape for stem in stems] == [mix.shape] * 4
    np.testing.assert_allclose(np.sum(stems, axis=0), mix, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["lame.mp3", "vorbis.ogg"])
def test_stems_of_a_span_line_up_with_that_span_of_the_input(inputs, dsp, tmp_path, name):
    source = inputs[name]
    result = split_file(source, dsp, tmp_path / "out", start=1.25, duration=0.5)
    mix = decode(source)[:, int(1.25 * SR) : int(1.75 * SR)]
    stems = [decode(path) for path in result.stems.values()]
    assert [stem.shape for stem in stems] == [mix.shape] * 4
    np.testing.assert_allclose(np.sum(stems, axis=0), mix, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FORMATS)
def test_any_span_reads_the_samples_of_the_whole_decode(long_inputs, name):
    source = long_inputs[name]
    whole = decode(source)
    for start in np.arange(0.0, 5.95, 0.1):
        span = read_span(source, float(start), 0.05)
        first = span.start_frame
        np.testing.assert_allclose(
            span.samples, whole[:, first : first + span.frames], rtol=0, atol=1e-6
        )


def test_16_bit_pcm_from_ffmpeg_reads_as_x_over_32768(inputs):
    import wave

    with wave.open(str(inputs["int16.wav"])) as handle:
        integers = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    expected = (integers.reshape(-1, 2).T / 32768).astype(np.float32)
    np.testing.assert_array_equal(read_span(inputs["int16.wav"]).samples, expected)
