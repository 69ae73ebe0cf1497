"""``daw-bridge batch --ray``: two Ray workers share a batch, as the in-process batch does it.

The package's local cluster (two one-core workers, kept warm between these
runs) and the tiny checkpoint. Stems are read back with soundfile.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from daw_bridge.cli import main
from tests.conftest import noise, write_wav

STEMS = ["bass.wav", "drums.wav", "manifest.json", "other.wav", "vocals.wav"]
PLACES = ["Alpha", "Album/Beta", "Gamma"]


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """Three short songs (WAV, FLAC in a subfolder, mono 48 kHz WAV)."""
    folder = tmp_path_factory.mktemp("songs")
    (folder / "Album").mkdir()
    write_wav(folder / "Alpha.wav", noise(seconds=1.0, seed=1))
    soundfile.write(folder / "Album" / "Beta.flac", noise(seconds=1.0, seed=2).T, 44100)
    write_wav(folder / "Gamma.wav", noise(channels=1, seconds=1.0, seed=3), 48000, bit_depth=16)
    return folder


@pytest.fixture(scope="module")
def in_process(songs, tiny_checkpoint, tmp_path_factory) -> Path:
    """The same batch without Ray: what every Ray run is compared with."""
    out = tmp_path_factory.mktemp("in-process")
    assert batch(tiny_checkpoint, songs, "--out", out) == 0
    return out / tiny_checkpoint.stem


@pytest.fixture
def cluster_batch(ray_cluster, tiny_checkpoint):
    def run(*argv: object) -> int:
        return batch(tiny_checkpoint, *argv, "--ray", "local", "--ray-workers", 2)

    return run


def batch(checkpoint: Path, *argv: object) -> int:
    return main(["batch", *map(str, argv), "--model", str(checkpoint), "--device", "cpu", "-q"])


def stems_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: soundfile.read(p, dtype="float32")[0] for p in sorted(folder.glob("*.wav"))}


def files_in(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones (staging leftovers) included."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def assert_whole_and_equal(model: Path, expected: Path, places: list[str]) -> None:
    """Exactly these songs, each with its whole set of files, each as in-process gives it
    (to float32 rounding: one core per worker here, two in-process)."""
    wanted = {"Album"} if any(p.startswith("Album/") for p in places) else set()
    for place in places:
        wanted |= {place, *(f"{place}/{name}" for name in STEMS)}
    assert files_in(model) == sorted(wanted)
    for place in places:
        ours, theirs = stems_of(model / place), stems_of(expected / place)
        assert ours.keys() == theirs.keys() == {"bass", "drums", "other", "vocals"}
        for name in ours:
            np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-6)


def test_two_workers_share_a_batch_with_a_broken_file_as_the_in_process_batch_does(
    tmp_path, songs, in_process, cluster_batch, tiny_checkpoint, capsys
):
    folder = tmp_path / "songs"
    shutil.copytree(songs, folder)
    (folder / "Broken.wav").write_bytes(b"RIFF, but no audio after it")
    out = tmp_path / "out"
    assert cluster_batch(folder, "--out", out) == 1
    printed = capsys.readouterr().out
    lines = printed.splitlines()[:4]
    # Numbered as they finish, each song once, with the in-process batch's words.
    assert [line.split()[0] for line in lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert sorted(tuple(line.split()[1:3]) for line in lines) == [
        ("failed", f"{folder / 'Broken.wav'}:"),
        ("ok", str(folder / "Album" / "Beta.flac")),
        ("ok", str(folder / "Alpha.wav")),
        ("ok", str(folder / "Gamma.wav")),
    ]
    assert "Batch: 3 ok, 0 skipped, 1 failed (of 4 songs)." in printed
    assert "Broken.wav: Cannot read" in printed.split("Failed:\n", 1)[1]
    assert_whole_and_equal(out / tiny_checkpoint.stem, in_process, PLACES)


def test_a_worker_killed_mid_song_is_restarted_and_every_song_is_whole(
    tmp_path, songs, in_process, cluster_batch, tiny_checkpoint, capsys
):
    """The test-only hook kills the first worker to reach the middle of a song (os._exit);
    Ray restarts it and runs that song again there; nothing half-written anywhere."""
    marker = tmp_path / "crashed"
    out = tmp_path / "out"
    assert cluster_batch(songs, "--out", out, "--ray-test-crash-once", marker) == 0
    assert marker.exists()  # a worker did die mid-song
    assert "Batch: 3 ok, 0 skipped, 0 failed (of 3 songs)." in capsys.readouterr().out
    assert_whole_and_equal(out / tiny_checkpoint.stem, in_process, PLACES)


def test_a_stopped_batch_leaves_whole_songs_only_and_resumes_from_there(
    tmp_path, songs, in_process, cluster_batch, tiny_checkpoint, monkeypatch, capsys
):
    """Ctrl-C (here: in the second song to reach delivery) ends the songs in flight with
    nothing of them written; the same command again skips what is done."""
    from daw_bridge.separation import keep

    real_keep_stems, calls = keep.keep_stems, []

    def interrupted_in_the_second_song(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # that song's stems are in its staging folder by now
            raise KeyboardInterrupt
        return real_keep_stems(*args, **kwargs)

    out = tmp_path / "out"
    model = out / tiny_checkpoint.stem
    monkeypatch.setattr(keep, "keep_stems", interrupted_in_the_second_song)
    assert cluster_batch(songs, "--out", out) == 130
    printed = capsys.readouterr()
    assert "Interrupted while splitting" in printed.err
    done = [place for place in PLACES if (model / place / "manifest.json").exists()]
    assert 1 <= len(done) <= 2
    assert f"Batch: {len(done)} ok, 0 skipped, 0 failed" in printed.out
    assert_whole_and_equal(model, in_process, done)  # no staging folder, no half a song

    monkeypatch.setattr(keep, "keep_stems", real_keep_stems)
    assert cluster_batch(songs, "--out", out) == 0
    printed = capsys.readouterr().out
    assert f"Batch: {3 - len(done)} ok, {len(done)} skipped, 0 failed (of 3 songs)." in printed
    assert_whole_and_equal(model, in_process, PLACES)
