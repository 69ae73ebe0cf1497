"""Applying presets: exact gain and mute, streaming, tails, latency, atomic outputs, VST3."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import ClassVar

import numpy as np
import pedalboard
import pytest

from daw_bridge.audio.io import read_span
from daw_bridge.errors import CancelledError
from daw_bridge.presets.apply import apply_preset, processed_folder
from daw_bridge.presets.schema import PresetError, parse_preset
from tests.conftest import noise, write_wav

SR = 44100


def preset(stems: dict, **top) -> object:
    return parse_preset({"name": "test", "stems": stems, **top})


def raw_stems(folder: Path, seconds: float = 1.0, channels: int = 2) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: write_wav(folder / f"{name}.wav", noise(channels, seconds, seed=i))
        for i, name in enumerate(("drums", "bass", "other", "vocals"))
    }


def samples(path: Path) -> np.ndarray:
    return read_span(path).samples


def test_gain_and_mute_are_exact_and_other_stems_pass_through(tmp_path):
    stems = raw_stems(tmp_path / "raw")
    chosen = preset({"vocals": {"gain_db": -6.0}, "drums": {"mute": True}})
    out = apply_preset(chosen, stems, processed_folder(tmp_path / "raw", chosen))
    assert set(out) == set(stems) and out["vocals"].parent == tmp_path / "raw" / "test"
    gain = np.float32(10 ** (-6 / 20))
    np.testing.assert_array_equal(samples(out["vocals"]), samples(stems["vocals"]) * gain)
    assert not samples(out["drums"]).any() and samples(out["drums"]).shape == (2, SR)
    np.testing.assert_array_equal(samples(out["bass"]), samples(stems["bass"]))


def test_streaming_in_blocks_equals_processing_the_whole_stem(tmp_path):
    stems = raw_stems(tmp_path / "raw", seconds=2.0)
    chain = [
        {"plugin": "HighpassFilter", "cutoff_frequency_hz": 200},
        {"plugin": "Compressor", "threshold_db": -30, "ratio": 4},
        {"plugin": "Reverb", "room_size": 0.8},
        {"plugin": "Delay", "delay_seconds": 0.05, "feedback": 0.5},
    ]
    chosen = preset({"vocals": {"chain": chain}})
    out = apply_preset(chosen, stems, tmp_path / "out", block_frames=1000)
    board = pedalboard.Pedalboard(
        [
            pedalboard.HighpassFilter(200),
            pedalboard.Compressor(threshold_db=-30, ratio=4),
            pedalboard.Reverb(room_size=0.8),
            pedalboard.Delay(delay_seconds=0.05, feedback=0.5),
        ]
    )
    whole = board(samples(stems["vocals"]), SR)
    np.testing.assert_allclose(samples(out["vocals"]), whole, atol=1e-6)


def test_memory_stays_bounded_for_a_long_stem(tmp_path):
    long = {"vocals": write_wav(tmp_path / "vocals.wav", noise(2, 60.0))}  # 21 MB of samples
    chosen = preset(
        {"vocals": {"chain": [{"plugin": "Reverb"}], "gain_db": -1.0, "loudness_lufs": -20.0}}
    )
    tracemalloc.start()
    try:
        apply_preset(chosen, long, tmp_path / "out", block_frames=16384)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MB"


def impulse(seconds: float = 1.0) -> np.ndarray:
    signal = np.zeros((2, int(seconds * SR)), np.float32)
    signal[:, SR // 10] = 0.5
    return signal


def test_delay_tail_is_cut_at_the_stem_end_or_kept_when_extending(tmp_path):
    raw = {"vocals": write_wav(tmp_path / "vocals.wav", impulse(1.0))}
    chain = [{"plugin": "Delay", "delay_seconds": 0.5, "feedback": 0.5, "mix": 0.5}]
    chosen = preset({"vocals": {"chain": chain}})
    cut = samples(apply_preset(chosen, raw, tmp_path / "cut", block_frames=4096)["vocals"])
    extended = samples(
        apply_preset(chosen, raw, tmp_path / "ext", tail="extend", block_frames=4096)["vocals"]
    )
    assert cut.shape == (2, SR)  # a clean cut: exactly the raw stem's length
    # Echoes every 0.5 s after the impulse at 0.1 s: 0.6 s is inside, 1.1 s, 1.6 s... after.
    echoes = np.flatnonzero(np.abs(extended[0]) > 1e-3)
    assert {round(i / SR, 2) for i in echoes} >= {0.1, 0.6, 1.1, 1.6, 2.1}
    np.testing.assert_array_equal(extended[:, :SR], cut)
    # It ends at the last echo above -90 dBFS, not at an arbitrary block boundary.
    assert np.abs(extended[:, -1]).max() > 10 ** (-90 / 20)
    assert extended.shape[1] < SR + 30 * SR


def test_reverb_tail_decays_below_the_threshold_and_extend_is_the_preset_default(tmp_path):
    raw = {"other": write_wav(tmp_path / "other.wav", impulse(0.5))}
    chosen = preset({"other": {"chain": [{"plugin": "Reverb", "room_size": 0.9}]}}, tail="extend")
    out = samples(apply_preset(chosen, raw, tmp_path / "out")["other"])
    assert out.shape[1] > SR  # the reverb rings on long after 0.5 s
    tail = out[:, SR // 2 :]
    assert np.sqrt(np.mean(tail[:, : SR // 10] ** 2)) > 1e-3  # audible right after the end
    assert np.abs(tail[:, -100:]).max() < 1e-3  # and faded out where the stem now ends


@pytest.mark.parametrize(
    ("step", "plugin"),
    [
        (
            {"plugin": "Resample", "target_sample_rate": 16000, "quality": "Linear"},
            pedalboard.Resample(16000, quality=pedalboard.Resample.Quality.Linear),
        ),
        ({"plugin": "MP3Compressor", "vbr_quality": 2}, pedalboard.MP3Compressor(2)),
    ],
)
def test_plugins_with_latency_stay_aligned_with_the_raw_stem(tmp_path, step, plugin):
    burst = noise(2, 1.0) * (np.arange(SR) > 0.3 * SR)
    raw = {"bass": write_wav(tmp_path / "bass.wav", burst)}
    chosen = preset({"bass": {"chain": [step]}})
    out = samples(apply_preset(chosen, raw, tmp_path / "o", block_frames=5000)["bass"])
    assert out.shape == (2, SR)
    # pedalboard compensates latency when it sees the whole signal at once: the reference.
    np.testing.assert_allclose(out, plugin(burst.astype(np.float32), SR), atol=1e-6)
    assert np.abs(out[:, : int(0.29 * SR)]).max() < 1e-3  # nothing moved earlier


def test_loudness_target_is_met_and_gain_applies_on_top(tmp_path):
    from daw_bridge.presets.loudness import LoudnessMeter

    raw = {"drums": write_wav(tmp_path / "drums.wav", noise(2, 3.0))}
    for gain in (0.0, -4.0):
        chosen = preset({"drums": {"loudness_lufs": -23.0, "gain_db": gain}})
        out = samples(apply_preset(chosen, raw, tmp_path / f"o{gain}")["drums"])
        meter = LoudnessMeter(SR, 2)
        meter.add(out)
        assert meter.integrated() == pytest.approx(-23.0 + gain, abs=0.05)


def test_raw_stems_are_never_overwritten_and_re_applying_replaces_the_outputs(tmp_path):
    stems = raw_stems(tmp_path / "raw")
    before = {name: path.read_bytes() for name, path in stems.items()}
    with pytest.raises(PresetError, match="overwrite the raw stems"):
        apply_preset(preset({"vocals": {"gain_db": 3.0}}), stems, tmp_path / "raw")
    folder = tmp_path / "raw" / "test"
    apply_preset(preset({"vocals": {"gain_db": 3.0}}), stems, folder)
    first = samples(folder / "vocals.wav")
    apply_preset(preset({"vocals": {"gain_db": -3.0}}), stems, folder)
    np.testing.assert_allclose(samples(folder / "vocals.wav"), first * 10 ** (-6 / 20), rtol=1e-5)
    assert {name: path.read_bytes() for name, path in stems.items()} == before
    assert sorted(p.name for p in folder.iterdir()) == [f"{n}.wav" for n in sorted(stems)]


def test_a_cancelled_run_leaves_the_previous_outputs_and_no_temporary_files(tmp_path):
    stems = raw_stems(tmp_path / "raw", seconds=2.0)
    folder = tmp_path / "out"
    apply_preset(preset({"vocals": {"gain_db": 3.0}}), stems, folder)
    previous = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls = iter(range(1000))
    with pytest.raises(CancelledError):
        apply_preset(
            preset({"default": {"gain_db": -12.0}}),
            stems,
            folder,
            block_frames=2048,
            should_cancel=lambda: next(calls) > 20,
        )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == previous


def test_a_missing_raw_stem_is_a_clear_error(tmp_path):
    stems = raw_stems(tmp_path / "raw")
    stems["vocals"].unlink()
    with pytest.raises(Exception, match=r"raw vocals stem .* is missing") as caught:
        apply_preset(preset({"vocals": {"mute": True}}), stems, tmp_path / "out")
    assert "Split the song again" in caught.value.fix


def vst3_preset(tmp_path: Path, **parameters) -> object:
    step = {"plugin": "vst3", "path": str(tmp_path / "Fake.vst3"), **parameters}
    return parse_preset({"name": "ext", "stems": {"vocals": {"chain": [step]}}}, None)


def test_a_missing_vst3_plugin_fails_clearly(tmp_path):
    stems = raw_stems(tmp_path / "raw")
    with pytest.raises(PresetError, match=r"VST3 plugin .*Fake\.vst3 was not found") as caught:
        apply_preset(vst3_preset(tmp_path), stems, tmp_path / "out")
    assert "stems.vocals.chain[0]" in caught.value.problem and "path" in caught.value.fix


class FakeExternal(pedalboard.Gain):
    """Stands in for a loaded VST3: a real plugin with a ``parameters`` mapping."""

    parameters: ClassVar[dict] = {"gain_db": None}


def test_vst3_plugins_load_only_when_applied_and_take_parameters_by_name(tmp_path, monkeypatch):
    loads: list[str] = []

    def fake_load(path: str, plugin_name: str | None = None) -> FakeExternal:
        loads.append(path)
        return FakeExternal()

    monkeypatch.setattr(pedalboard, "load_plugin", fake_load)
    (tmp_path / "Fake.vst3").mkdir()  # a VST3 is a bundle folder
    chosen = vst3_preset(tmp_path, gain_db=-6.0)
    assert loads == []  # reading and checking the preset loads nothing
    stems = raw_stems(tmp_path / "raw")
    out = apply_preset(chosen, stems, tmp_path / "out")
    assert loads == [str(tmp_path / "Fake.vst3")]  # once, for the one stem that uses it
    expected = samples(stems["vocals"]) * np.float32(10 ** (-6 / 20))
    np.testing.assert_allclose(samples(out["vocals"]), expected, atol=1e-6)
    with pytest.raises(PresetError, match="has no parameter 'Drive'") as caught:
        apply_preset(vst3_preset(tmp_path, Drive=1.0), stems, tmp_path / "out2")
    assert "gain_db" in caught.value.fix


def test_audio_units_are_refused_off_macos(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    step = {"plugin": "au", "path": "/Library/Audio/Plug-Ins/Components/X.component"}
    chosen = parse_preset({"name": "au", "stems": {"vocals": {"chain": [step]}}})
    with pytest.raises(PresetError, match="only on macOS"):
        apply_preset(chosen, raw_stems(tmp_path / "raw"), tmp_path / "out")


def test_16_bit_stems_are_read_as_daws_read_them(tmp_path):
    """x / 32768, as libsndfile and REAPER read them (pedalboard read x / 32767)."""
    import wave

    import soundfile

    values = np.array([16384, -32768, 1, 32767] * 1000, dtype="<i2")
    raw = tmp_path / "raw"
    raw.mkdir()
    with wave.open(str(raw / "vocals.wav"), "wb") as handle:  # made without our reader
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SR)
        handle.writeframes(values.tobytes())
    chosen = preset({"vocals": {"gain_db": -6.0}})

    out = apply_preset(chosen, {"vocals": raw / "vocals.wav"}, processed_folder(raw, chosen))

    processed, _ = soundfile.read(out["vocals"], dtype="float32")
    expected = (values / 32768).astype(np.float32) * np.float32(10 ** (-6 / 20))
    np.testing.assert_array_equal(processed, expected)
