"""Every built-in preset loads, processes a real song's stems and does what its chain says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daw_bridge.audio.io import read_span
from daw_bridge.demo import synthetic_song
from daw_bridge.presets import library
from daw_bridge.presets.apply import apply_preset, processed_folder
from daw_bridge.presets.loudness import LoudnessMeter
from tests.conftest import write_wav

SR = 44100
SECONDS = 4.0
BUILT_INS = (
    "acapella",
    "clean-vocals",
    "drum-sample-prep",
    "instrumental",
    "karaoke",
    "lofi-drums",
    "sub-bass",
    "wide-reverb-pad",
)


def tone(frequency: float, amplitude: float, seconds: float = SECONDS) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    wave = (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return np.stack([wave, wave])


def band_db(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    return 10 * np.log10(spectrum[..., (freqs >= low) & (freqs < high)].sum() + 1e-30)


def rms_10ms(x: np.ndarray) -> np.ndarray:
    frames = x[:, : x.shape[1] // 441 * 441].reshape(x.shape[0], -1, 441)
    return np.sqrt(np.mean(frames**2, axis=(0, 2)))


def change_db(before: np.ndarray, after: np.ndarray, low: float, high: float) -> float:
    return band_db(after, low, high) - band_db(before, low, high)


@pytest.fixture(scope="module")
def song() -> dict[str, np.ndarray]:
    _, stems = synthetic_song(seconds=SECONDS, seed=2)
    return {name: stem.astype(np.float32) for name, stem in stems.items()}


def run(
    tmp_path: Path, name: str, stems: dict[str, np.ndarray], **options
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    folder = tmp_path / "stems"
    folder.mkdir(parents=True, exist_ok=True)
    raw = {stem: write_wav(folder / f"{stem}.wav", audio) for stem, audio in stems.items()}
    preset = library.load(name)
    out = apply_preset(preset, raw, processed_folder(folder, preset), **options)
    assert set(out) == set(raw) and all(p.parent == folder / name for p in out.values())
    read = {stem: read_span(path).samples for stem, path in raw.items()}
    return read, {stem: read_span(path).samples for stem, path in out.items()}


def unchanged(before: dict, after: dict, *stems: str) -> None:
    for stem in stems:
        np.testing.assert_array_equal(after[stem], before[stem], err_msg=stem)


def muted(before: dict, after: dict, *stems: str) -> None:
    for stem in stems:
        assert after[stem].shape == before[stem].shape and not after[stem].any(), stem


def test_there_are_at_least_eight_built_ins_and_each_is_valid():
    names = {entry.name for entry in library.available() if entry.origin == "built-in"}
    assert set(BUILT_INS) <= names
    for name in names:
        preset = library.load(name)
        assert preset.description and preset.stems


def test_clean_vocals_cuts_rumble_evens_the_level_and_de_harshes(tmp_path, song):
    vocals = song["vocals"] * 4 + tone(40, 0.05)  # at -13 dBFS RMS, with handling rumble
    vocals[:, vocals.shape[1] // 2 :] *= 0.1  # a quiet second half (-20 dB)
    before, after = run(tmp_path, "clean-vocals", {**song, "vocals": vocals})
    v0, v1 = before["vocals"], after["vocals"]
    # High-pass at 90 Hz: the 40 Hz rumble falls well below the voice (200 Hz - 2 kHz).
    assert change_db(v0, v1, 30, 60) - change_db(v0, v1, 200, 2000) < -12
    # De-harsh dip of 4 dB at 3.5 kHz, measured in the quiet half, below the compressor.
    half = v0.shape[1] // 2
    q0, q1 = v0[:, half + SR // 10 :], v1[:, half + SR // 10 :]
    assert change_db(q0, q1, 3300, 3700) - change_db(q0, q1, 400, 1500) < -3
    # 3:1 compression: the loud half came down towards the quiet half.
    spread_in = band_db(v0[:, :half], 200, 2000) - band_db(v0[:, half:], 200, 2000)
    spread_out = band_db(v1[:, :half], 200, 2000) - band_db(v1[:, half:], 200, 2000)
    assert spread_out < spread_in - 3
    unchanged(before, after, "drums", "bass", "other")


def test_lofi_drums_darkens_and_crushes_to_8_bits(tmp_path, song):
    before, after = run(tmp_path, "lofi-drums", song)
    d0, d1 = before["drums"], after["drums"]
    assert change_db(d0, d1, 6000, 20000) - change_db(d0, d1, 100, 2000) < -12
    steps = d1 * 2**8  # Bitcrush to 8 bits: every sample on a 1/256 grid
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert len(np.unique(d1)) < len(np.unique(d0)) / 10
    unchanged(before, after, "vocals", "bass", "other")


def test_sub_bass_lifts_the_lows_cuts_rumble_and_top_and_limits(tmp_path, song):
    bass = song["bass"] * 5 + tone(12, 0.1) + tone(900, 0.05)  # hot, rumble, string noise
    before, after = run(tmp_path, "sub-bass", {**song, "bass": bass})
    b0, b1 = before["bass"], after["bass"]
    lows = change_db(b0, b1, 40, 80)
    assert lows - change_db(b0, b1, 800, 1000) > 15  # low shelf up, low-pass at 250 Hz
    assert change_db(b0, b1, 8, 16) - lows < -6  # high-pass at 25 Hz
    assert np.abs(b0).max() > 1.0 and np.abs(b1).max() <= 1.0  # the limiter catches the peaks
    unchanged(before, after, "vocals", "drums", "other")


def test_acapella_keeps_only_vocals_gated_and_high_passed(tmp_path, song):
    rng = np.random.default_rng(0)
    vocals = song["vocals"] + tone(50, 0.005)
    gap = slice(int(1.0 * SR), int(2.0 * SR))
    bleed = 0.0005 * rng.standard_normal((2, SR))  # -66 dBFS, 40 dB under the voice
    vocals[:, gap] = bleed.astype(np.float32)
    before, after = run(tmp_path, "acapella", {**song, "vocals": vocals})
    muted(before, after, "drums", "bass", "other")
    v0, v1 = before["vocals"], after["vocals"]
    assert change_db(v0, v1, 40, 60) - change_db(v0, v1, 300, 2000) < -10
    middle = slice(int(1.3 * SR), int(1.9 * SR))  # well inside the gap: the gate is closed
    assert band_db(v1[:, middle], 0, SR / 2) - band_db(v0[:, middle], 0, SR / 2) < -10


def test_instrumental_mutes_vocals_and_leaves_the_rest_bit_exact(tmp_path, song):
    before, after = run(tmp_path, "instrumental", song)
    muted(before, after, "vocals")
    unchanged(before, after, "drums", "bass", "other")


def test_instrumental_and_karaoke_on_a_two_stem_split(tmp_path, song):
    two = {"vocals": song["vocals"], "no_vocals": song["drums"] + song["bass"] + song["other"]}
    for name in ("instrumental", "karaoke"):
        before, after = run(tmp_path / name, name, two)
        muted(before, after, "vocals")
        unchanged(before, after, "no_vocals")


def test_karaoke_mutes_vocals_and_lifts_the_melody(tmp_path, song):
    before, after = run(tmp_path, "karaoke", song)
    muted(before, after, "vocals")
    o0, o1 = before["other"], after["other"]
    # +2 dB overall, plus up to +3 dB around 1.5 kHz, where the melody's presence is.
    assert 4.0 < change_db(o0, o1, 1300, 1700) < 5.2
    assert 2.0 < change_db(o0, o1, 50, 150) < 2.6
    unchanged(before, after, "drums", "bass")


def test_drum_sample_prep_solos_drums_at_minus_14_lufs_with_gated_gaps(tmp_path, song):
    rng = np.random.default_rng(1)
    drums = song["drums"] * 0.5 + tone(15, 0.05)
    drums += (0.0005 * rng.standard_normal(drums.shape)).astype(np.float32)  # bleed, -66 dB
    before, after = run(tmp_path, "drum-sample-prep", {**song, "drums": drums})
    muted(before, after, "vocals", "bass", "other")
    d0, d1 = before["drums"], after["drums"]
    meter = LoudnessMeter(SR, 2)
    meter.add(d1)
    assert meter.integrated() == pytest.approx(-14.0, abs=0.1)
    assert change_db(d0, d1, 10, 20) - change_db(d0, d1, 100, 2000) < -10  # 30 Hz high-pass
    contrast = [
        20 * np.log10(np.percentile(f, 95) / np.percentile(f, 10)) for f in map(rms_10ms, (d0, d1))
    ]
    assert contrast[1] > contrast[0] + 10  # hits stand out further: gaps are gated


def test_wide_reverb_pad_spreads_the_stereo_image_and_keeps_the_tail(tmp_path, song):
    mono = song["other"].mean(axis=0)
    other = np.stack([mono, mono])
    other[:, -SR // 2 :] = 0  # the pad stops half a second before the end
    before, after = run(tmp_path, "wide-reverb-pad", {**song, "other": other})
    o0, o1 = before["other"], after["other"]
    assert o1.shape[1] > o0.shape[1]  # the preset extends the stem by the reverb tail
    frames = o0.shape[1]
    tail = o1[:, frames:]
    assert np.sqrt(np.mean(tail[:, : SR // 10] ** 2)) > 1e-3  # the reverb rings on
    assert np.abs(tail[:, -10:]).max() < 1e-3
    correlation = np.corrcoef(o1[0, :frames], o1[1, :frames])[0, 1]
    assert correlation < 0.9  # from identical channels (correlation 1) to a wide image
    assert change_db(o0, o1[:, :frames], 40, 90) - change_db(o0, o1[:, :frames], 500, 3000) < -10
    unchanged(before, after, "vocals", "drums", "bass")
    _, cut = run(tmp_path / "cut", "wide-reverb-pad", {**song, "other": other}, tail="cut")
    np.testing.assert_array_equal(cut["other"], o1[:, :frames])  # cut: the same, to the sample
