"""Reading spans of the user's audio and writing stems."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile
from pedalboard.io import AudioFile

from daw_bridge.audio.io import audio_info, check_span, read_span, write_audio
from daw_bridge.errors import AudioInputError, InvalidOptionError, OutputExistsError
from tests.conftest import noise, write_wav

SR = 44100


def write_pcm_wav(path: Path, integers: np.ndarray, width: int) -> Path:
    """A PCM WAV of ``(channels, frames)`` integers, made by the standard library."""
    little_endian = np.ascontiguousarray(integers.T, dtype="<i4").view(np.uint8)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(integers.shape[0])
        handle.setsampwidth(width)
        handle.setframerate(SR)
        handle.writeframes(little_endian.reshape(-1, 4)[:, :width].tobytes())
    return path


@pytest.mark.parametrize("suffix", [".wav", ".aiff", ".flac", ".ogg", ".mp3"])
def test_reads_every_supported_format(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    samples = noise(seconds=1.0)
    with AudioFile(str(path), "w", SR, 2) as handle:
        handle.write(samples)
    span = read_span(path)
    assert span.samplerate == SR and span.channels == 2
    assert span.frames >= SR  # lossy codecs may add padding frames
    if suffix in {".wav", ".aiff", ".flac"}:
        np.testing.assert_allclose(span.samples, samples, atol=1e-4)


def test_reads_exactly_the_requested_span(tmp_path):
    samples = noise(seconds=3.0)
    path = write_wav(tmp_path / "long.wav", samples)
    span = read_span(path, start=1.25, duration=0.5)
    assert span.start_frame == int(1.25 * SR) and span.frames == int(0.5 * SR)
    np.testing.assert_array_equal(span.samples, samples[:, int(1.25 * SR) : int(1.75 * SR)])


@pytest.mark.parametrize("samplerate", [8000, 22050, 48000, 96000, 192000])
def test_any_rate_from_8_to_192_khz(tmp_path, samplerate):
    path = write_wav(tmp_path / "r.wav", noise(1, 0.5, samplerate), samplerate)
    span = read_span(path)
    assert span.samplerate == samplerate and span.frames == int(0.5 * samplerate)


def test_rates_outside_the_range_are_refused(tmp_path):
    path = write_wav(tmp_path / "r.wav", noise(1, 0.5, 4000), 4000)
    with pytest.raises(AudioInputError, match="4000 Hz"):
        read_span(path)


def test_mono_stays_mono(tmp_path):
    span = read_span(write_wav(tmp_path / "m.wav", noise(1)))
    assert span.samples.shape == (1, SR)


def test_more_than_two_channels_is_a_clear_error(tmp_path):
    path = write_wav(tmp_path / "six.wav", noise(6, 0.1))
    with pytest.raises(AudioInputError, match="6 channels") as error:
        read_span(path)
    assert "stereo" in error.value.fix


def test_missing_file(tmp_path):
    with pytest.raises(AudioInputError, match="not found"):
        read_span(tmp_path / "nope.wav")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(AudioInputError, match="not a file"):
        read_span(tmp_path)


def test_non_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my lyrics, not audio")
    with pytest.raises(AudioInputError, match="Cannot read") as error:
        read_span(path)
    assert "WAV" in error.value.fix


def test_truncated_wav_is_reported_not_padded_with_silence(tmp_path):
    path = write_wav(tmp_path / "t.wav", noise(seconds=1.0), bit_depth=16)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match="truncated"):
        read_span(path)


def test_truncated_flac_is_reported(tmp_path):
    path = tmp_path / "t.flac"
    with AudioFile(str(path), "w", SR, 2) as handle:
        handle.write(noise(seconds=1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match="damaged or truncated"):
        read_span(path)


def test_truncated_aiff_is_reported(tmp_path):
    path = tmp_path / "t.aiff"
    with AudioFile(str(path), "w", SR, 2, bit_depth=24) as handle:
        handle.write(noise(seconds=1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match="truncated: its header promises 44100 frames"):
        read_span(path)


def test_a_wav_whose_data_size_was_never_filled_in_is_read_to_its_end(tmp_path):
    """A recorder that stopped before fixing its header leaves the size 0xFFFFFFFF."""
    integers = np.arange(-500, 500).reshape(2, 500)
    path = write_pcm_wav(tmp_path / "recording.wav", integers, 2)
    data = bytearray(path.read_bytes())
    size_at = data.index(b"data") + 4
    data[size_at : size_at + 4] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(read_span(path).samples, integers / 32768)


@pytest.mark.parametrize(("width", "full_scale"), [(2, 32768), (3, 8388608)])
def test_integer_pcm_reads_as_daws_read_it(tmp_path, width, full_scale):
    """16 bit as x / 32768 (not x / 32767), 24 bit as x / 8388608: what REAPER plays."""
    integers = np.array([[-full_scale, -full_scale // 2, -1, 0, 1, full_scale - 1]])
    span = read_span(write_pcm_wav(tmp_path / "pcm.wav", integers, width))
    np.testing.assert_array_equal(span.samples, integers / full_scale)
    assert span.samples[0, 0] == -1.0 and span.samples[0, 1] == -0.5


def test_zero_length_file(tmp_path):
    path = write_wav(tmp_path / "empty.wav", np.zeros((2, 0), np.float32))
    with pytest.raises(AudioInputError, match="no audio"):
        read_span(path)


def test_silence_is_valid(tmp_path):
    span = read_span(write_wav(tmp_path / "s.wav", np.zeros((2, 1000), np.float32)))
    assert span.frames == 1000 and not span.samples.any()


def test_nan_and_inf_samples_are_reported_with_their_time(tmp_path):
    samples = noise(seconds=1.0)
    samples[0, 22050] = np.nan
    samples[1, 30000] = np.inf
    with pytest.raises(AudioInputError, match=r"2 NaN or infinite samples \(first at 0.500 s\)"):
        read_span(write_wav(tmp_path / "nan.wav", samples))


@pytest.mark.parametrize(
    ("start", "duration", "message"),
    [
        (2.0, None, "outside"),
        (0.5, 1.0, "runs past the end"),
        (-1.0, None, "Start time"),
        (0.0, 0.0, "Duration"),
        (0.0, float("nan"), "Duration"),
    ],
)
def test_span_outside_the_file(tmp_path, start, duration, message):
    path = write_wav(tmp_path / "one.wav", noise(seconds=1.0))
    with pytest.raises(AudioInputError, match=message):
        read_span(path, start, duration)


def test_audio_info(tmp_path):
    path = write_wav(tmp_path / "i.wav", noise(1, 0.5, 48000), 48000)
    assert audio_info(path) == (48000, 1, 24000)


def test_span_hash_identifies_content_not_file(tmp_path):
    samples = noise(seconds=1.0)
    a = read_span(write_wav(tmp_path / "a.wav", samples), 0.1, 0.2)
    b = read_span(write_wav(tmp_path / "b.wav", samples), 0.1, 0.2)
    c = read_span(tmp_path / "b.wav", 0.1, 0.3)
    assert a.content_sha256() == b.content_sha256() != c.content_sha256()


@pytest.mark.parametrize(
    ("sample_format", "subtype"), [("float32", "FLOAT"), ("int24", "PCM_24"), ("int16", "PCM_16")]
)
def test_writes_wav_in_the_requested_format(tmp_path, sample_format, subtype):
    samples = noise(seconds=0.2)
    path = write_audio(tmp_path / "stem.wav", samples, 48000, sample_format)
    info = soundfile.info(str(path))
    assert (info.subtype, info.samplerate, info.channels, info.frames) == (
        subtype,
        48000,
        2,
        samples.shape[1],
    )


def test_float32_keeps_values_beyond_full_scale(tmp_path):
    samples = np.array([[1.5, -2.0, 0.25]], dtype=np.float32)
    path = write_audio(tmp_path / "hot.wav", samples, SR)
    np.testing.assert_array_equal(read_span(path).samples, samples)


def test_never_overwrites_unless_asked(tmp_path):
    path = tmp_path / "stem.wav"
    write_audio(path, noise(seconds=0.1), SR)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_audio(path, noise(seconds=0.1, seed=1), SR)
    assert path.read_bytes() == before
    write_audio(path, noise(seconds=0.1, seed=1), SR, overwrite=True)
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["stem.wav"]  # no temporary left


def test_unknown_sample_format(tmp_path):
    with pytest.raises(InvalidOptionError, match="float32"):
        write_audio(tmp_path / "x.wav", noise(seconds=0.1), SR, "int12")  # type: ignore[arg-type]


def test_check_span_validates_from_the_header_alone(tmp_path):
    path = write_wav(tmp_path / "one.wav", noise(seconds=1.0))
    check_span(path, 0.25, 0.5)  # fine: no error
    with pytest.raises(AudioInputError, match="runs past the end"):
        check_span(path, 0.75, 0.5)


def test_iter_span_streams_the_span_in_blocks(tmp_path):
    from daw_bridge.audio.io import iter_span, open_span

    samples = noise(2, 2.0)
    source = write_wav(tmp_path / "a.wav", samples)
    info = open_span(source, 0.25, 1.5)
    blocks = list(iter_span(info, block_frames=10_000))
    assert max(b.shape[1] for b in blocks) == 10_000
    np.testing.assert_array_equal(
        np.concatenate(blocks, axis=1), read_span(source, 0.25, 1.5).samples
    )


def test_streamed_writer_is_atomic_and_warns_on_clipping(tmp_path, caplog):
    from daw_bridge.audio.io import open_writer

    target = tmp_path / "stem.wav"
    with pytest.raises(RuntimeError), open_writer(target, 44100, 2) as writer:
        writer.write(np.zeros((2, 100), np.float32))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with caplog.at_level("WARNING"), open_writer(target, 44100, 2, "int16") as writer:
        writer.write(np.full((2, 100), 0.5, np.float32))
        writer.write(np.full((2, 100), 2.0, np.float32))
    assert read_span(target).frames == 200 and "will clip" in caplog.text


@pytest.mark.parametrize("channels", [1, 2])
def test_a_streamed_span_hash_is_the_span_content_hash(tmp_path, channels: int) -> None:
    from daw_bridge.audio.io import open_span, span_sha256

    path = write_wav(tmp_path / "a.wav", noise(channels, seconds=3.0), 44100)
    expected = read_span(path, 0.7, 1.9).content_sha256()
    assert span_sha256(open_span(path, 0.7, 1.9)) == expected
    assert span_sha256(open_span(path, 0.7, 1.8)) != expected
