"""``daw-bridge batch``: many songs in one run, each delivered as ``split`` delivers it.

Stems are written by pedalboard and read back here with soundfile (libsndfile).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from daw_bridge.batch import collect_songs
from daw_bridge.cli import main
from tests.conftest import free_port, killed_splits_staging, noise, write_wav
from tests.output_folders import UNUSABLE, unusable_folder

STEMS = ["bass.wav", "drums.wav", "manifest.json", "other.wav", "vocals.wav"]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No weights anywhere and the download URL is a closed local port."""
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", f"http://127.0.0.1:{free_port()}/")
    monkeypatch.setenv("DAW_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DAW_BRIDGE_MODEL_DIR", raising=False)


@pytest.fixture
def songs(tmp_path) -> Path:
    """A folder of three short songs (WAV, FLAC in a subfolder, mono WAV) and a broken file."""
    folder = tmp_path / "songs"
    (folder / "Album").mkdir(parents=True)
    write_wav(folder / "Alpha.wav", noise(seconds=1.0, seed=1))
    soundfile.write(folder / "Album" / "Beta.flac", noise(seconds=1.0, seed=2).T, 44100)
    write_wav(folder / "Gamma.wav", noise(channels=1, seconds=1.0, seed=3), 48000, bit_depth=16)
    (folder / "Broken.wav").write_bytes(b"RIFF, but no audio after it")
    return folder


def batch(checkpoint: Path, *argv: object) -> int:
    return main(["batch", *map(str, argv), "--model", str(checkpoint), "-q"])


def stems_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: soundfile.read(p, dtype="float32")[0] for p in sorted(folder.glob("*.wav"))}


def test_three_songs_and_a_broken_file_give_three_stem_sets_one_failure_and_exit_1(
    tmp_path, songs, tiny_checkpoint, capsys
):
    out = tmp_path / "out"
    assert batch(tiny_checkpoint, songs, "--out", out) == 1
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    # One result line per song, in a stable order: paths inside the folder, case aside.
    assert [line.split()[:3] for line in lines[:4]] == [
        ["[1/4]", "ok", str(songs / "Album" / "Beta.flac")],
        ["[2/4]", "ok", str(songs / "Alpha.wav")],
        ["[3/4]", "failed", f"{songs / 'Broken.wav'}:"],
        ["[4/4]", "ok", str(songs / "Gamma.wav")],
    ]
    assert "Cannot read" in lines[2] and "How to fix:" in lines[2]  # the problem and its fix
    assert "Batch: 3 ok, 0 skipped, 1 failed (of 4 songs)." in printed
    failed = printed.split("Failed:\n", 1)[1]  # the failures listed again at the end
    assert "Broken.wav: Cannot read" in failed and "How to fix:" in failed
    model = out / tiny_checkpoint.stem
    for folder in (model / "Alpha", model / "Album" / "Beta", model / "Gamma"):
        assert sorted(p.name for p in folder.iterdir()) == STEMS
    assert not (model / "Broken").exists()


def test_each_songs_stems_equal_what_split_gives_for_that_song(tmp_path, songs, tiny_checkpoint):
    (songs / "Broken.wav").unlink()
    assert batch(tiny_checkpoint, songs, "--out", tmp_path / "batch") == 0
    for song, place in [("Alpha.wav", "Alpha"), ("Album/Beta.flac", "Album/Beta")]:
        alone = tmp_path / "alone" / song
        argv = ["split", str(songs / song), "--out", str(alone), "--model", str(tiny_checkpoint)]
        assert main([*argv, "-q"]) == 0
        split = stems_of(alone / tiny_checkpoint.stem / Path(song).stem)
        batched = stems_of(tmp_path / "batch" / tiny_checkpoint.stem / place)
        assert split.keys() == batched.keys() == {"bass", "drums", "other", "vocals"}
        for name in split:
            np.testing.assert_array_equal(batched[name], split[name])


def files_in(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones (staging leftovers) included."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_a_batch_stopped_by_ctrl_c_resumes_skipping_the_finished_song(
    tmp_path, songs, tiny_checkpoint, monkeypatch, capsys
):
    """Ctrl-C during the second song: the first stays, nothing of the second is left; the
    same command again skips the first and splits the rest."""
    from daw_bridge.separation import keep

    (songs / "Broken.wav").unlink()
    out = tmp_path / "out"
    model = out / tiny_checkpoint.stem
    real_keep_stems, calls = keep.keep_stems, []

    def interrupted_after_the_first_song(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second song's stems are in its staging folder by now
            raise KeyboardInterrupt
        return real_keep_stems(*args, **kwargs)

    monkeypatch.setattr(keep, "keep_stems", interrupted_after_the_first_song)
    assert batch(tiny_checkpoint, songs, "--out", out) == 130
    err = capsys.readouterr()
    assert "Interrupted while splitting" in err.err and "Alpha.wav" in err.err
    assert "Batch: 1 ok, 0 skipped, 0 failed, 2 not started (of 3 songs)." in err.out
    assert files_in(model) == ["Album", "Album/Beta", *(f"Album/Beta/{name}" for name in STEMS)]
    finished = {p: p.stat().st_mtime_ns for p in (model / "Album" / "Beta").iterdir()}

    monkeypatch.setattr(keep, "keep_stems", real_keep_stems)
    assert batch(tiny_checkpoint, songs, "--out", out) == 0
    printed = capsys.readouterr().out
    assert [line.split()[1] for line in printed.splitlines()[:3]] == ["skipped", "ok", "ok"]
    assert "Batch: 2 ok, 1 skipped, 0 failed (of 3 songs)." in printed
    assert {p: p.stat().st_mtime_ns for p in (model / "Album" / "Beta").iterdir()} == finished
    for place in ("Alpha", "Gamma"):
        assert sorted(p.name for p in (model / place).iterdir()) == STEMS


def test_what_a_killed_batch_left_in_a_songs_folder_is_undone_and_the_song_redone(
    tmp_path, songs, tiny_checkpoint
):
    (songs / "Broken.wav").unlink()
    folder = tmp_path / "out" / tiny_checkpoint.stem / "Gamma"
    killed_splits_staging(folder)
    assert batch(tiny_checkpoint, songs / "Gamma.wav", "--out", tmp_path / "out") == 0
    assert files_in(folder) == STEMS


def test_a_song_is_skipped_only_if_its_manifest_records_the_same_input_and_options(
    tmp_path, songs, tiny_checkpoint, capsys
):
    song, out = songs / "Alpha.wav", tmp_path / "out"
    manifest = out / tiny_checkpoint.stem / "Alpha" / "manifest.json"
    assert batch(tiny_checkpoint, song, "--out", out) == 0
    capsys.readouterr()

    # Re-tagged or touched: size or time differ, the decoded audio does not.
    os.utime(song, (1e9, 1e9))
    assert batch(tiny_checkpoint, song, "--out", out) == 0
    assert "skipped" in capsys.readouterr().out

    # Other options: refused, nothing replaced without --overwrite.
    before = manifest.read_bytes()
    assert batch(tiny_checkpoint, song, "--out", out, "--format", "int16") == 1
    printed = capsys.readouterr().out
    assert "float32 stems, not int16" in printed and "Pass --overwrite" in printed
    assert manifest.read_bytes() == before
    assert batch(tiny_checkpoint, song, "--out", out, "--format", "int16", "--overwrite") == 0
    assert json.loads(manifest.read_text())["sample_format"] == "int16"

    # Another song under the same name: its audio differs.
    write_wav(song, noise(seconds=1.0, seed=99))
    assert batch(tiny_checkpoint, song, "--out", out, "--format", "int16") == 1
    assert "the stems of other audio" in capsys.readouterr().out


def test_same_named_songs_in_different_folders_never_share_a_stem_folder(
    tmp_path, tiny_checkpoint, capsys
):
    """The rule: OUT/<model>/<path inside the given folder>/<name>; songs that would still
    share a folder get their parent folder's name added, else their extension."""
    library = tmp_path / "library"
    for place in ("live/Song.wav", "studio/Song.wav", "Song.wav", "Song.flac"):
        (library / place).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(library / place, noise(seconds=0.5, seed=len(place)).T, 44100)

    def places(*inputs: Path) -> list[str]:
        return [song.place.as_posix() for song in collect_songs(inputs, tmp_path / "out")]

    assert places(library) == ["live/Song", "Song (flac)", "Song (wav)", "studio/Song"]
    assert places(library / "live", library / "studio") == ["Song (live)", "Song (studio)"]
    assert places(library / "live" / "Song.wav") == ["Song"]  # where `split` puts it

    out = tmp_path / "out"
    assert batch(tiny_checkpoint, library / "live", library / "studio", "--out", out) == 0
    for label in ("live", "studio"):
        manifest = json.loads((out / tiny_checkpoint.stem / f"Song ({label})" / "manifest.json")
                              .read_text())  # fmt: skip
        assert manifest["input"]["path"] == str((library / label / "Song.wav").resolve())


def test_songs_are_collected_once_in_a_stable_order_without_hidden_files_or_the_output(
    tmp_path,
):
    folder = tmp_path / "music"
    for name in ("b.wav", "A.mp3", "c/d.ogg", "notes.txt", "._b.wav", ".hidden/e.wav"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    (folder / "stems" / "htdemucs" / "b").mkdir(parents=True)
    (folder / "stems" / "htdemucs" / "b" / "vocals.wav").write_bytes(b"")
    found = collect_songs([folder, folder / "b.wav"], folder / "stems")
    assert [song.source.relative_to(folder).as_posix() for song in found] == [
        "A.mp3", "b.wav", "c/d.ogg"
    ]  # fmt: skip


def test_a_missing_input_or_a_folder_without_audio_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch
):
    def no_model(_args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("daw_bridge.cli._load", no_model)
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "No audio files in" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", UNUSABLE)
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(
    tmp_path, songs, capsys, monkeypatch, case
):
    def no_model(_args):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr("daw_bridge.cli._load", no_model)
    with unusable_folder(case, tmp_path) as (bad, says):
        assert main(["batch", str(songs), "--out", str(bad), "-q"]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error and says in error
    assert "How to fix: Choose an output folder you can write to" in error
