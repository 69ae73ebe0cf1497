"""The classical ``dsp`` separator: same contract as the neural one, real separation."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf

from daw_bridge.demo import synthetic_song
from daw_bridge.errors import CancelledError
from daw_bridge.separation import dsp as dsp_module
from daw_bridge.separation.dsp import DspSeparator
from daw_bridge.separation.metrics import best_constant_gain_sdr, sdr
from tests.conftest import EVAL_SONGS, noise

dsp = DspSeparator()


@pytest.mark.parametrize("channels", [1, 2])
def test_shape_dtype_and_order(channels):
    mix = noise(channels, 1.0)
    stems = dsp.separate(mix)
    assert dsp.sources == ("drums", "bass", "other", "vocals")
    assert stems.shape == (4, channels, mix.shape[1]) and stems.dtype == np.float32


@pytest.mark.parametrize("channels", [1, 2])
def test_stems_sum_to_the_input(channels):
    mix = 3.0 * noise(channels, 1.5)
    assert np.max(np.abs(dsp.separate(mix).sum(axis=0) - mix)) < 1e-5


def test_silence_gives_silent_finite_stems():
    stems = dsp.separate(np.zeros((2, 44100), np.float32))
    assert np.all(np.isfinite(stems)) and not stems.any()


def test_very_short_input_works():
    mix = noise(2, 100 / 44100)
    stems = dsp.separate(mix)
    assert stems.shape == (4, 2, 100)
    np.testing.assert_allclose(stems.sum(axis=0), mix, atol=1e-6)


def test_progress_rises_to_one():
    seen: list[float] = []
    dsp.separate(noise(2, 0.5), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3


def test_cancel_raises():
    with pytest.raises(CancelledError):
        dsp.separate(noise(2, 0.5), should_cancel=lambda: True)


@pytest.mark.parametrize(("seed", "bpm"), [(0, 120), (1, 97), (2, 140)])
@pytest.mark.parametrize("mono", [False, True])
def test_drums_and_bass_beat_the_constant_gain_baseline_by_3_db(seed, bpm, mono):
    mix, truth = synthetic_song(seconds=6.0, seed=seed, bpm=bpm)
    if mono:
        mix = mix.mean(axis=0, keepdims=True)
        truth = {name: stem.mean(axis=0, keepdims=True) for name, stem in truth.items()}
    stems = dict(zip(dsp.sources, dsp.separate(mix), strict=True))
    for name in ("drums", "bass"):
        gain = sdr(truth[name], stems[name]) - best_constant_gain_sdr(truth[name], mix)
        assert gain >= 3.0, f"{name}: only {gain:.2f} dB above the baseline"


def test_centre_voice_goes_to_vocals_in_stereo():
    mix, truth = synthetic_song(seconds=6.0)
    stems = dict(zip(dsp.sources, dsp.separate(mix), strict=True))
    gain = sdr(truth["vocals"], stems["vocals"]) - best_constant_gain_sdr(truth["vocals"], mix)
    assert gain >= 3.0


def test_long_input_is_split_into_crossfaded_blocks_that_still_sum_to_the_input(monkeypatch):
    import daw_bridge.separation.dsp as dsp_module

    monkeypatch.setattr(dsp_module, "BLOCK_S", 1.0)
    monkeypatch.setattr(dsp_module, "BLOCK_OVERLAP_S", 0.4)
    mix, _ = synthetic_song(seconds=3.0)
    assert len(dsp_module._blocks(mix.shape[1])) >= 3
    seen: list[float] = []
    stems = dsp.separate(mix, progress=seen.append)
    assert np.max(np.abs(stems.sum(axis=0) - mix)) < 1e-5
    assert seen == sorted(seen) and len(seen) >= 8 and seen[-1] == 1.0
    # Cancelling after the first block stops the job.
    calls = iter(range(100))
    with pytest.raises(CancelledError):
        dsp.separate(mix, should_cancel=lambda: next(calls) >= 3)


@pytest.mark.parametrize("shape", [(3, 1000), (1000,), (2, 2, 1000)])
def test_rejects_audio_that_is_not_mono_or_stereo(shape):
    from daw_bridge.errors import AudioInputError

    with pytest.raises(AudioInputError):
        dsp.separate(np.zeros(shape, np.float32))


def _a_real_song() -> np.ndarray:
    songs = sorted(EVAL_SONGS.glob("*/mixture.flac"))
    if not songs:
        pytest.skip(f"no evaluation songs at {EVAL_SONGS}")
    audio, samplerate = sf.read(songs[3], dtype="float32")
    assert samplerate == dsp_module.SAMPLERATE
    return audio.T


@pytest.mark.parametrize("band", ["low", "upper"])
@pytest.mark.parametrize("clip", ["a 7 s song", "the shortest block (one 8192-point frame)"])
def test_the_harmonic_masks_are_exactly_librosas_hpss(band, clip):
    """The median filters run through scipy's 1-D filter, line by line joined end to
    end (2.7x faster for the whole separator); librosa's own HPSS is the reference."""
    cfg = dsp_module._LOW_BAND if band == "low" else dsp_module._UPPER_BAND
    mix = _a_real_song() if clip == "a 7 s song" else synthetic_song(seconds=8192 / 44100)[0]
    stft = librosa.stft(mix, n_fft=cfg.n_fft, hop_length=cfg.hop)
    mag = np.sqrt(np.mean(np.abs(stft) ** 2, axis=0))
    # Every (frames, bins, power) the separator asks for, in both passes.
    for frames, bins, power in [(9, 9, 4.0), (31, 31, 2.0), (5, 31, 2.0), (3, 63, 2.0)]:
        ours = dsp_module._harmonic_mask(dsp_module._Medians(mag), frames, bins, power)
        reference = librosa.decompose.hpss(mag, kernel_size=(frames, bins), power=power, mask=True)
        assert np.array_equal(ours, reference[0]), (frames, bins, power)
