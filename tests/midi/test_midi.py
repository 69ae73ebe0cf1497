"""Stems to MIDI: accuracy on synthetic ground truth (mir_eval), timing, robustness."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from daw_bridge.cli import main
from daw_bridge.demo import _drums
from daw_bridge.midi.convert import stem_to_midi
from daw_bridge.midi.drums import CLOSED_HIHAT, KICK, SNARE
from daw_bridge.midi.notes import Note, read_notes, write_midi
from tests.conftest import noise, write_wav
from tests.output_folders import UNUSABLE, unusable_folder

SR = 44100
BASS_LINE = [(40, 0.0, 0.5), (45, 0.5, 1.0), (43, 1.0, 1.5), (40, 1.5, 2.0), (47, 2.0, 2.5),
             (45, 2.5, 3.25), (38, 3.25, 4.0)]  # fmt: skip


def note_channels(path) -> set[int]:
    """MIDI channels of a file's notes, numbered 1 to 16 as DAWs show them."""
    import mido

    return {m.channel + 1 for m in mido.MidiFile(str(path)) if m.type in ("note_on", "note_off")}


def hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def render_bass(notes=BASS_LINE, lead_in: float = 0.0) -> np.ndarray:
    audio = np.zeros(int(SR * (notes[-1][2] + lead_in + 0.2)))
    for pitch, start, end in notes:
        first, length = int((start + lead_in) * SR), int((end - start) * SR)
        t = np.arange(length) / SR
        tone = np.sin(2 * np.pi * hz(pitch) * t) + 0.3 * np.sin(4 * np.pi * hz(pitch) * t)
        audio[first : first + length] += tone * np.minimum(1, t / 0.01) * np.exp(-t / 0.6)
    return (0.3 * audio)[None].astype(np.float32)


def test_drum_onsets_of_a_clean_pattern_score_at_least_0_9(tmp_path):
    rng = np.random.default_rng(0)
    lead_in = int(0.1 * SR)  # a hit on the very first sample has no onset to detect
    drums = np.concatenate([np.zeros(lead_in), _drums(8 * SR, SR, 120.0, rng)])
    beat = SR // 2
    truth = np.array(sorted({*range(0, 8 * SR, beat), *range(beat // 2, 8 * SR, beat)}))
    truth = (truth + lead_in) / SR
    notes = stem_to_midi(drums[None], SR, "drums", tmp_path / "d.mid")
    onsets = np.unique(np.round([n.start for n in read_notes(tmp_path / "d.mid")], 4))
    assert mir_eval.onset.f_measure(truth, onsets, window=0.05)[0] >= 0.9
    assert {n.pitch for n in notes} == {KICK, SNARE, CLOSED_HIHAT}
    assert note_channels(tmp_path / "d.mid") == {10}  # General MIDI drums: heard as a kit

    def beat_phase(note: Note) -> float:  # 0 on the kick beats, 0.5 on the snare beats
        return ((note.start - 0.1) % 1.0 + 0.05) % 1.0 - 0.05

    assert all(abs(beat_phase(n)) < 0.05 for n in notes if n.pitch == KICK)
    assert all(abs(beat_phase(n) - 0.5) < 0.05 for n in notes if n.pitch == SNARE)


def test_bass_line_notes_score_at_least_0_8(tmp_path):
    stem_to_midi(render_bass(), SR, "bass", tmp_path / "b.mid")
    got = read_notes(tmp_path / "b.mid")
    ref_intervals = np.array([[s, e] for _, s, e in BASS_LINE])
    ref_pitches = np.array([hz(p) for p, _, _ in BASS_LINE])
    est_intervals = np.array([[n.start, n.end] for n in got])
    est_pitches = np.array([hz(n.pitch) for n in got])
    _, _, f_measure, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref_intervals,
        ref_pitches,
        est_intervals,
        est_pitches,
        onset_tolerance=0.05,
        offset_ratio=None,
    )
    assert f_measure >= 0.8
    assert note_channels(tmp_path / "b.mid") == {1}  # not channel 10, which plays drums


def test_absolute_timing_is_kept_in_the_file(tmp_path):
    notes = [Note(0.0, 0.5, 40, 100), Note(1.2345, 1.5, 43, 90), Note(61.001, 62.0, 45, 80)]
    write_midi(tmp_path / "t.mid", notes, drums=False, name="bass")
    for written, read in zip(notes, read_notes(tmp_path / "t.mid"), strict=True):
        assert abs(written.start - read.start) < 0.001 and written.pitch == read.pitch


def test_silence_gives_an_empty_midi_file(tmp_path):
    for kind in ("drums", "bass", "vocals"):
        out = tmp_path / f"{kind}.mid"
        assert stem_to_midi(np.zeros((2, SR), np.float32), SR, kind, out) == []
        assert out.is_file() and read_notes(out) == []


@pytest.mark.parametrize("kind", ["drums", "bass", "vocals"])
def test_very_short_and_unsuitable_audio_does_not_crash(tmp_path, kind):
    stem_to_midi(noise(2, 0.01), SR, kind, tmp_path / "short.mid")
    stem_to_midi(
        render_bass()[:, : SR // 2] if kind == "drums" else noise(1, 0.5),
        SR,
        kind,
        tmp_path / "odd.mid",
    )


def test_midi_command(tmp_path, capsys):
    stem = write_wav(tmp_path / "bass.wav", render_bass())
    assert main(["midi", str(stem), "--kind", "bass"]) == 0
    assert (tmp_path / "bass.mid").is_file() and "notes from" in capsys.readouterr().out
    assert main(["midi", str(stem), "--kind", "bass"]) == 2  # never overwrites silently


def no_transcription(*_args, **_kwargs):
    raise AssertionError("the stem was transcribed before its MIDI file could be written")


@pytest.mark.parametrize("case", UNUSABLE)
def test_midi_command_refuses_an_unusable_folder_before_transcribing(
    tmp_path, capsys, monkeypatch, case
):
    monkeypatch.setattr("daw_bridge.midi.convert.stem_to_midi", no_transcription)
    stem = write_wav(tmp_path / "bass.wav", render_bass())
    with unusable_folder(case, tmp_path) as (bad, says):
        code = main(["midi", str(stem), "--kind", "bass", "--out", str(bad / "bass.mid")])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert str(bad) in error and says in error and "How to fix:" in error


def test_an_existing_midi_file_is_refused_before_transcribing(tmp_path, capsys, monkeypatch):
    stem = write_wav(tmp_path / "bass.wav", render_bass())
    (tmp_path / "bass.mid").write_bytes(b"mine")
    monkeypatch.setattr("daw_bridge.midi.convert.stem_to_midi", no_transcription)
    assert main(["midi", str(stem), "--kind", "bass"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "bass.mid").read_bytes() == b"mine"


def test_split_can_write_midi_for_its_stems(tmp_path):
    from daw_bridge.demo import synthetic_song

    mix, _ = synthetic_song(seconds=3.0)
    song = write_wav(tmp_path / "song.wav", mix)
    argv = [
        "split",
        str(song),
        "--model",
        "dsp",
        "--out",
        str(tmp_path),
        "--midi",
        "drums,bass",
        "-q",
    ]
    assert main(argv) == 0
    folder = tmp_path / "dsp" / "song"
    assert read_notes(folder / "drums.mid") and read_notes(folder / "bass.mid")


def test_pitch_bend_follows_a_glide_only_when_asked(tmp_path):
    t = np.arange(SR) / SR
    glide = 55.0 * 2 ** (t / 12)  # A1 rising one semitone over a second
    audio = (0.3 * np.sin(2 * np.pi * np.cumsum(glide) / SR))[None].astype(np.float32)
    plain = stem_to_midi(audio, SR, "bass", tmp_path / "plain.mid", min_note=0.05)
    bent = stem_to_midi(audio, SR, "bass", tmp_path / "bent.mid", min_note=0.05, pitch_bend=True)
    assert all(not n.bends for n in plain)
    offsets = [offset for note in bent for _, offset in note.bends]
    assert offsets and max(abs(o) for o in offsets) <= 1.0
    import mido

    wheel = [m for m in mido.MidiFile(str(tmp_path / "bent.mid")) if m.type == "pitchwheel"]
    assert wheel and wheel[-1].pitch == 0  # reset after the last note


def test_retiming_to_a_project_tempo_keeps_every_note_at_its_second(tmp_path) -> None:
    import mido

    from daw_bridge.midi.notes import retime_midi

    notes = [Note(0.1, 0.3, 60, 100), Note(1.234, 2.0, 64, 90), Note(7.5, 7.6, 67, 80)]
    path = write_midi(tmp_path / "a.mid", notes, drums=False, name="bass")
    retime_midi(path, 93.0)
    tempo = next(m.tempo for m in mido.MidiFile(path).tracks[0] if m.type == "set_tempo")
    assert mido.tempo2bpm(tempo) == pytest.approx(93.0, abs=1e-3)
    for before, after in zip(notes, read_notes(path), strict=True):
        assert after.pitch == before.pitch and after.velocity == before.velocity
        assert after.start == pytest.approx(before.start, abs=1e-3)
        assert after.end == pytest.approx(before.end, abs=1e-3)
