"""``--two-stems drums --drum-kit MODEL``: the drum kit is checked against the stems the
split delivers (``drums`` and ``no_drums``), not against nothing, in the CLI and the server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daw_bridge.cli import main
from tests.conftest import ServerProcess, noise, write_wav


@pytest.fixture
def song(tmp_path) -> Path:
    return write_wav(tmp_path / "Song.wav", noise(seconds=2.0, seed=4))


def test_the_cli_splits_the_drums_of_a_two_stem_drums_split(tmp_path, song, tiny_checkpoint):
    out = tmp_path / "out"
    args = ["split", str(song), "--model", str(tiny_checkpoint), "--two-stems", "drums"]
    assert main([*args, "--drum-kit", "dsp", "--out", str(out), "-q"]) == 0
    folder = out / tiny_checkpoint.stem / "Song"
    assert sorted(p.name for p in folder.glob("*.wav")) == ["drums.wav", "no_drums.wav"]
    pieces = sorted(p.stem for p in (folder / "drums").glob("*.wav"))
    assert pieces == ["bass", "drums", "other", "rest", "vocals"]  # dsp's four, and rest


def test_the_cli_still_refuses_a_two_stem_split_without_drums(
    tmp_path, song, tiny_checkpoint, capsys
):
    args = ["split", str(song), "--model", str(tiny_checkpoint), "--two-stems", "vocals"]
    assert main([*args, "--drum-kit", "dsp", "--out", str(tmp_path / "out"), "-q"]) != 0
    assert "drum-kit split works on the drums stem" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_server_splits_the_drums_of_a_two_stem_drums_job(tmp_path, song, tiny_checkpoint):
    from daw_bridge.client.client import Client

    server = ServerProcess(tiny_checkpoint, tmp_path / "state")
    try:
        with Client(server.address, timeout=60) as client:
            for _ in range(2):  # the second job is served from the stem cache
                final = client.wait(
                    client.submit(
                        song, tmp_path / "kit", two_stems="drums", drum_kit="dsp", overwrite=True
                    )
                )
                assert final["state"] == "done", final
                assert set(final["result"]["stems"]) == {"drums", "no_drums"}
                pieces = set(final["result"]["drum_kit"])
                assert pieces == {"drums", "bass", "other", "vocals", "rest"}
            assert final["result"]["cached"]
            refused = client.wait(
                client.submit(song, tmp_path / "v", two_stems="vocals", drum_kit="dsp")
            )
            assert refused["state"] == "failed"
            assert "drums stem" in refused["error"]["problem"]
    finally:
        server.kill()
