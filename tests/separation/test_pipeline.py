"""From a span of a file to stems on disk: lengths, rates, sums, safety, manifest."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import numpy as np
import pytest
import soundfile

from daw_bridge.audio.io import read_span
from daw_bridge.errors import (
    CancelledError,
    InvalidOptionError,
    ModelOutputError,
    OutputExistsError,
)
from daw_bridge.models.loader import load_separator
from daw_bridge.separation.pipeline import split_file
from tests.conftest import noise, write_wav

SR = 44100


class EverythingIsDrums:
    """A test separator that hands the whole mix to one stem: makes alignment visible."""

    name = "identity"
    sources = ("drums", "bass", "other", "vocals")
    samplerate = 44100

    def separate(self, mix, progress=None, should_cancel=None):
        out = np.zeros((4, *mix.shape), dtype=np.float32)
        out[0] = mix
        return out


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load_separator(str(tiny_checkpoint), device="cpu")


def stems_of(result) -> dict[str, np.ndarray]:
    return {name: read_span(path).samples for name, path in result.stems.items()}


def test_span_becomes_four_float32_stems_that_sum_to_it(tmp_path, tiny):
    source = write_wav(tmp_path / "song.wav", noise(seconds=3.0))
    result = split_file(source, tiny, tmp_path / "out", start=0.5, duration=1.5)
    span = read_span(source, 0.5, 1.5)
    stems = stems_of(result)
    assert list(stems) == ["drums", "bass", "other", "vocals"]
    for path in result.stems.values():
        info = soundfile.info(str(path))
        assert (info.subtype, info.samplerate, info.frames) == ("FLOAT", SR, span.frames)
    np.testing.assert_allclose(sum(stems.values()), span.samples, atol=1e-6)
    assert result.folder == tmp_path / "out" / tiny.name / "song [0.500-2.000s]"


def test_without_residual_the_model_output_is_kept(tmp_path, tiny):
    source = write_wav(tmp_path / "song.wav", noise(seconds=1.0))
    raw = stems_of(split_file(source, tiny, tmp_path / "a", sum_to_input=False))
    mix = read_span(source).samples
    assert np.max(np.abs(sum(raw.values()) - mix)) > 1e-3  # random weights separate nothing


@pytest.mark.parametrize("samplerate", [8000, 48000, 96000])
def test_other_rates_come_back_at_the_source_rate_and_length(tmp_path, tiny, samplerate):
    source = write_wav(tmp_path / "m.wav", noise(1, 1.1, samplerate), samplerate)
    result = split_file(source, tiny, tmp_path / "out")
    for stem in stems_of(result).values():
        assert stem.shape == (1, int(1.1 * samplerate))
    assert result.samplerate == samplerate
    np.testing.assert_allclose(sum(stems_of(result).values()), read_span(source).samples, atol=1e-6)


@pytest.mark.parametrize("samplerate", [48000, 22050])
def test_resampling_keeps_stems_aligned_with_the_source(tmp_path, samplerate):
    t = np.arange(samplerate) / samplerate
    tone = (0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)[None]
    source = write_wav(tmp_path / "tone.wav", tone, samplerate)
    stems = stems_of(split_file(source, EverythingIsDrums(), tmp_path / "out"))
    middle = slice(samplerate // 10, -samplerate // 10)
    leak = np.max(np.abs(stems["other"][:, middle]))  # the residual: what resampling broke
    assert 20 * np.log10(leak / 0.5) < -60


def test_two_stems_are_the_stem_and_its_exact_complement(tmp_path, tiny):
    source = write_wav(tmp_path / "song.wav", noise(seconds=1.0))
    stems = stems_of(split_file(source, tiny, tmp_path / "out", two_stems="vocals"))
    assert list(stems) == ["vocals", "no_vocals"]
    np.testing.assert_allclose(
        stems["vocals"] + stems["no_vocals"], read_span(source).samples, atol=1e-6
    )


def test_two_stems_needs_a_stem_of_the_model(tmp_path, tiny):
    source = write_wav(tmp_path / "song.wav", noise(seconds=0.5))
    with pytest.raises(InvalidOptionError, match="drums, bass, other, vocals"):
        split_file(source, tiny, tmp_path / "out", two_stems="guitar")


def test_existing_stems_stop_the_job_before_inference(tmp_path):
    source = write_wav(tmp_path / "song.wav", noise(seconds=0.5))
    first = split_file(source, EverythingIsDrums(), tmp_path / "out")
    before = {p: p.read_bytes() for p in first.stems.values()}
    calls = []

    class Spy(EverythingIsDrums):
        def separate(self, mix, progress=None, should_cancel=None):
            calls.append(1)
            return super().separate(mix)

    with pytest.raises(OutputExistsError, match="--overwrite"):
        split_file(source, Spy(), tmp_path / "out")
    assert calls == [] and all(p.read_bytes() == b for p, b in before.items())
    split_file(source, Spy(), tmp_path / "out", overwrite=True)
    assert calls == [1]


def test_cancel_leaves_no_files(tmp_path, tiny):
    source = write_wav(tmp_path / "song.wav", noise(seconds=3.0))
    with pytest.raises(CancelledError):
        split_file(source, tiny, tmp_path / "out", should_cancel=lambda: True)
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_a_model_that_outputs_nan_leaves_no_files(tmp_path):
    from daw_bridge.separation.engine import DemucsEngine, DemucsSeparator
    from tests.conftest import damaged_htdemucs

    engine = DemucsEngine([damaged_htdemucs()], device="cpu", backend="torch")
    separator = DemucsSeparator("broken", engine)
    source = write_wav(tmp_path / "song.wav", noise(seconds=3.0))
    with pytest.raises(ModelOutputError, match="not numbers"):
        split_file(source, separator, tmp_path / "out")
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_source_media_is_never_modified(tmp_path, tiny):
    source = write_wav(tmp_path / "song.wav", noise(seconds=1.0))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    split_file(source, tiny, tmp_path / "out")
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


def test_progress_rises_to_one(tmp_path, tiny):
    source = write_wav(tmp_path / "song.wav", noise(seconds=3.0))
    seen: list[float] = []
    split_file(source, tiny, tmp_path / "out", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 4


def test_manifest_describes_the_job(tmp_path, tiny):
    source = write_wav(tmp_path / "song.wav", noise(seconds=2.0), 48000)
    result = split_file(source, tiny, tmp_path / "out", start=0.25, duration=1.0)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["model"] == tiny.name
    assert manifest["samplerate"] == 48000 and manifest["frames"] == 48000
    assert manifest["input"]["start_frame"] == 12000
    assert manifest["input"]["file_size"] == source.stat().st_size
    modified = datetime.fromisoformat(manifest["input"]["file_modified"]).timestamp()
    assert modified == pytest.approx(source.stat().st_mtime, abs=1e-6)
    assert manifest["input"]["span_sha256"] == read_span(source, 0.25, 1.0).content_sha256()
    assert manifest["stems"] == {s: f"{s}.wav" for s in ("drums", "bass", "other", "vocals")}
    assert manifest["sum_to_input"] is True and manifest["residual_stem"] == "other"
    assert manifest["versions"]["torch"] and manifest["versions"]["daw-bridge"]


@pytest.mark.parametrize(("sample_format", "subtype"), [("int24", "PCM_24"), ("int16", "PCM_16")])
def test_integer_formats_on_request(tmp_path, sample_format, subtype):
    source = write_wav(tmp_path / "song.wav", noise(seconds=0.5))
    result = split_file(source, EverythingIsDrums(), tmp_path / "out", sample_format=sample_format)
    assert {soundfile.info(str(p)).subtype for p in result.stems.values()} == {subtype}
