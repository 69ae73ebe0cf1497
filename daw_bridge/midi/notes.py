"""Notes in absolute time, written as a Standard MIDI File with mido.

Times are seconds from the stem's first sample, so a MIDI item placed at the
stem's position lines up whatever the project tempo: the file carries a fixed
120 BPM tempo map at 960 ticks per beat (about 0.5 ms resolution).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mido

from daw_bridge.files import atomic_output

TICKS_PER_BEAT = 960
TEMPO_US_PER_BEAT = 500_000  # 120 BPM
DRUM_CHANNEL = 9  # General MIDI channel 10


BEND_RANGE_SEMITONES = 2.0  # the General MIDI default pitch-bend range


@dataclass(frozen=True)
class Note:
    start: float
    end: float
    pitch: int
    velocity: int
    #: ``(seconds, semitones from pitch)`` while the note sounds; empty for none.
    bends: tuple[tuple[float, float], ...] = ()


def bend_value(semitones: float) -> int:
    """A pitchwheel value for an offset, clipped to the +/-2 semitone range."""
    return round(8191 * max(-1.0, min(1.0, semitones / BEND_RANGE_SEMITONES)))


def seconds_to_ticks(seconds: float) -> int:
    return round(seconds * 1_000_000 / TEMPO_US_PER_BEAT * TICKS_PER_BEAT)


def write_midi(
    path: Path, notes: list[Note], *, drums: bool, name: str, overwrite: bool = False
) -> Path:
    """One track named ``name``; drum notes on GM channel 10."""
    channel = DRUM_CHANNEL if drums else 0
    events: list[tuple[int, int, mido.Message]] = []
    for note in notes:
        on = mido.Message("note_on", note=note.pitch, velocity=note.velocity, channel=channel)
        off = mido.Message("note_off", note=note.pitch, velocity=0, channel=channel)
        end = max(seconds_to_ticks(note.end), seconds_to_ticks(note.start) + 1)
        events.append((seconds_to_ticks(note.start), 2, on))
        events.append((end, 0, off))  # at equal times, note-offs come first
        for when, semitones in note.bends:
            bend = mido.Message("pitchwheel", pitch=bend_value(semitones), channel=channel)
            events.append((min(seconds_to_ticks(when), end - 1), 1, bend))
        if note.bends:
            events.append((end, 0, mido.Message("pitchwheel", pitch=0, channel=channel)))
    track = mido.MidiTrack(
        [mido.MetaMessage("track_name", name=name, time=0),
         mido.MetaMessage("set_tempo", tempo=TEMPO_US_PER_BEAT, time=0)]
    )  # fmt: skip
    now = 0
    for tick, _order, message in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    with atomic_output(Path(path), overwrite) as temporary:
        midi.save(str(temporary))
    return Path(path)


def retime_midi(path: Path, bpm: float) -> None:
    """Rewrite ``path`` at ``bpm`` with every event at the same second.

    A DAW that places MIDI by beats at its own tempo (REAPER does for MIDI
    items) then still lines the notes up with the audio, as long as the
    project keeps one tempo over the item.
    """
    midi = mido.MidiFile(str(path))
    scale = bpm / (60_000_000 / TEMPO_US_PER_BEAT)
    for track in midi.tracks:
        now_old = now_new = 0
        for message in track:
            now_old += message.time
            target = round(now_old * scale)
            message.time, now_new = target - now_new, target
            if message.type == "set_tempo":
                message.tempo = mido.bpm2tempo(bpm)
    with atomic_output(Path(path), overwrite=True) as temporary:
        midi.save(str(temporary))


def read_notes(path: Path) -> list[Note]:
    """Notes of a file written by :func:`write_midi`, in seconds (for tests and tools)."""
    midi = mido.MidiFile(str(path))
    open_notes: dict[int, tuple[float, int]] = {}
    notes: list[Note] = []
    now = 0.0
    for message in midi:  # iterating a MidiFile yields delta times in seconds
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            open_notes[message.note] = (now, message.velocity)
        elif message.type in ("note_off", "note_on") and message.note in open_notes:
            start, velocity = open_notes.pop(message.note)
            notes.append(Note(start, now, message.note, velocity))
    return sorted(notes, key=lambda n: (n.start, n.pitch))
