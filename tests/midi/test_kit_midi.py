"""Drums MIDI from a drum-kit split's pieces: each drum's hits from its own stem.

A kick track and a snare track at different times are mixed into a drums stem. The
drums-stem path has to guess each hit's drum from its spectrum and mistakes this
snare's low body for a kick; the piece path cannot, since every kick-piece onset is a
kick and every snare-piece onset a snare. Files are read back with mido directly.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest

from daw_bridge.cli import main
from daw_bridge.midi.convert import midi_for_stems, uses_pieces
from daw_bridge.midi.drums import CLOSED_HIHAT, KICK, LOW_TOM, SNARE, drum_hits, kit_hits
from tests.conftest import write_wav

SR = 44100
SECONDS = 6.0
KICKS = [0.25, 1.0, 1.75, 2.6, 3.4, 4.1, 4.9]
SNARES = [0.6, 1.4, 2.2, 3.0, 3.8, 4.55, 5.4]
HATS = [0.4, 1.2, 2.0, 2.8, 3.6, 4.35, 5.15]
#: Onsets are found on 256-sample frames (5.8 ms) and backtracked to the hit's start.
TOLERANCE = 0.01


def _place(hit: np.ndarray, times: list[float]) -> np.ndarray:
    track = np.zeros(int(SECONDS * SR))
    for time in times:
        first = int(time * SR)
        track[first : first + hit.size] += hit[: track.size - first]
    return track


def _decay(seconds: float, tau: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(int(seconds * SR)) / SR
    return t, np.exp(-t / tau) * np.minimum(1.0, (seconds - t) / 0.05)  # fades to silence


def kick_track(times: list[float] = KICKS) -> np.ndarray:
    """A pitch-dropping sine body (110 to 50 Hz) with a short beater click."""
    rng = np.random.default_rng(1)
    t, envelope = _decay(0.6, 0.15)
    sweep = 50 + 60 * np.exp(-t / 0.03)
    body = np.sin(2 * np.pi * np.cumsum(sweep) / SR) * envelope
    click = 0.6 * rng.standard_normal(t.size) * np.exp(-t / 0.004)
    return 0.5 * _place(body + click, times)


def snare_track(times: list[float] = SNARES) -> np.ndarray:
    """A low-tuned snare: a 130 Hz shell tone under noisy wires."""
    rng = np.random.default_rng(2)
    t, envelope = _decay(0.5, 0.08)
    body = 0.8 * np.sin(2 * np.pi * 130 * t) * envelope
    wires = 0.5 * rng.standard_normal(t.size) * np.exp(-t / 0.06)
    return 0.5 * _place(body + wires, times)


def hat_track(times: list[float] = HATS) -> np.ndarray:
    """A closed hi-hat: bright noise, very short."""
    rng = np.random.default_rng(3)
    noise = np.diff(rng.standard_normal(int(0.15 * SR) + 1))  # tilted towards the highs
    return 0.2 * _place(noise * _decay(0.15, 0.02)[1], times)


def starts(notes, pitch: int) -> list[float]:
    return sorted(note.start for note in notes if note.pitch == pitch)


def matches(found: list[float], truth: list[float]) -> bool:
    """One note per true hit, each within TOLERANCE of it."""
    return len(found) == len(truth) and all(
        abs(f - t) <= TOLERANCE for f, t in zip(found, truth, strict=True)
    )


def midi_notes(path: Path) -> list[tuple[float, int, int]]:
    """(seconds, note, channel) of every note-on, read by mido from the file itself."""
    now, notes = 0.0, []
    for message in mido.MidiFile(str(path)):
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            notes.append((now, message.note, message.channel))
    return notes


@pytest.fixture
def kit(tmp_path) -> dict[str, Path]:
    kick, snare = kick_track(), snare_track()
    return {
        "drums": write_wav(tmp_path / "drums.wav", (kick + snare)[None]),
        "kick": write_wav(tmp_path / "kick.wav", kick[None]),
        "snare": write_wav(tmp_path / "snare.wav", snare[None]),
    }


def test_the_drums_stem_alone_mistakes_some_snares_for_kicks() -> None:
    """Why the pieces matter: without them this kit's drum notes are wrong."""
    notes = drum_hits((kick_track() + snare_track())[None], SR)
    assert not matches(starts(notes, KICK), KICKS)
    kicks_on_snares = [
        s for s in SNARES if any(abs(s - k) <= TOLERANCE for k in starts(notes, KICK))
    ]
    assert kicks_on_snares  # a snare hit written as a kick


def test_kick_and_snare_notes_sit_exactly_on_their_own_pieces_onsets(kit) -> None:
    stems = {"drums": kit["drums"]}
    written = midi_for_stems(stems, ["drums"], pieces={"kick": kit["kick"], "snare": kit["snare"]})
    assert written == {"drums": kit["drums"].with_suffix(".mid")}
    notes = midi_notes(written["drums"])
    kicks = sorted(time for time, note, _ in notes if note == KICK)
    snares = sorted(time for time, note, _ in notes if note == SNARE)
    assert matches(kicks, KICKS) and matches(snares, SNARES)
    assert {channel for _, _, channel in notes} == {9}  # General MIDI drums (channel 10)


def test_hi_hats_come_from_the_cymbals_piece_when_there_is_one() -> None:
    kick, snare, hats = kick_track(), snare_track(), hat_track()
    drums = (kick + snare + hats)[None]
    pieces = {"kick": kick[None], "snare": snare[None], "cymbals": hats[None]}
    notes = kit_hits(pieces, SR, drums)
    assert matches(starts(notes, CLOSED_HIHAT), HATS)
    assert matches(starts(notes, KICK), KICKS) and matches(starts(notes, SNARE), SNARES)
    # Without cymbals, hi-hats are found in the drums stem as before; kick and snare are not.
    without = kit_hits({"kick": kick[None], "snare": snare[None]}, SR, drums)
    assert starts(without, KICK) == starts(notes, KICK)
    assert {note.pitch for note in without} <= {KICK, SNARE, CLOSED_HIHAT}
    assert any(abs(h - t) <= TOLERANCE for h in starts(without, CLOSED_HIHAT) for t in HATS)


def test_toms_become_low_tom_notes_and_bleed_from_other_drums_is_ignored() -> None:
    toms = snare_track([1.0, 3.0])
    bleed = 0.01 * kick_track([2.0])  # -40 dB of a kick leaking into the toms
    notes = kit_hits(
        {"kick": kick_track(), "snare": snare_track(), "toms": (toms + bleed)[None]}, SR
    )
    assert matches(starts(notes, LOW_TOM), [1.0, 3.0])


def test_pieces_without_kick_and_snare_leave_drums_midi_as_it_was(kit) -> None:
    assert uses_pieces({"kick": kit["kick"], "snare": kit["snare"], "rest": kit["drums"]})
    assert not uses_pieces({"drums": kit["drums"], "rest": kit["drums"]})  # e.g. dsp as a kit
    written = midi_for_stems({"drums": kit["drums"]}, ["drums"], pieces={"kick": kit["kick"]})
    expected = sorted((n.start, n.pitch) for n in drum_hits(read_pcm(kit["drums"]), SR))
    found = sorted((t, n) for t, n, _ in midi_notes(written["drums"]))
    assert [n for _, n in found] == [n for _, n in expected]
    np.testing.assert_allclose([t for t, _ in found], [t for t, _ in expected], atol=1e-3)


def read_pcm(path: Path) -> np.ndarray:
    from daw_bridge.audio.io import read_span

    return read_span(path).samples


def test_the_cli_takes_drums_midi_from_the_kit_pieces(tmp_path, kit, tiny_checkpoint, monkeypatch):
    """``split --drum-kit ... --midi drums``: whatever the drum-kit model, the MIDI's kicks
    and snares come from the pieces it made (here stood in for by the synthetic ones)."""
    from daw_bridge.separation import drum_kit

    def pieces(drums, separator, folder, sample_format="float32", **_):
        folder.mkdir(parents=True, exist_ok=True)
        return {
            name: write_wav(folder / f"{name}.wav", read_pcm(kit[name]))
            for name in ("kick", "snare")
        }

    monkeypatch.setattr(drum_kit, "split_drums", pieces)
    out = tmp_path / "out"
    args = ["split", str(kit["drums"]), "--model", str(tiny_checkpoint), "--drum-kit", "dsp"]
    assert main([*args, "--midi", "drums", "--out", str(out), "-q"]) == 0
    (midi,) = out.glob("*/*/drums.mid")
    notes = midi_notes(midi)
    assert matches(sorted(t for t, n, _ in notes if n == KICK), KICKS)
    assert matches(sorted(t for t, n, _ in notes if n == SNARE), SNARES)
