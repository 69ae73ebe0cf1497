"""``daw-bridge reaper run``: a request file in, a status file a Lua shim can poll out."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from daw_bridge.audio.io import read_span
from daw_bridge.cli import main
from daw_bridge.reaper import keyvalue, runner
from tests.conftest import free_port, noise, write_wav


def write_request(folder: Path, settings: dict, items: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    values: dict[str, object] = {"version": 1, **settings, "items": ",".join(items)}
    for key, fields in items.items():
        values.update({f"item.{key}.{name}": value for name, value in fields.items()})
    path = folder / "request.txt"
    keyvalue.write(path, values)
    return path


def audio_item(path: Path, startoffs: float, length: float, playrate: float = 1.0) -> dict:
    return {
        "type": "WAVE",
        "file": path,
        "startoffs": startoffs,
        "length": length,
        "playrate": playrate,
        "loop": 0,
        "source_length": 10.0,
        "name": "take",
    }


@pytest.fixture
def source(tmp_path) -> Path:
    return write_wav(tmp_path / "my song é.wav", noise(seconds=10.0, seed=3), 44100)


def test_a_request_becomes_stems_of_exactly_the_played_span(server, source, tmp_path) -> None:
    request = write_request(
        tmp_path / "job",
        {"address": server.address, "out_dir": tmp_path / "media", "autostart": 0},
        {"1": audio_item(source, 3.2, 2.0), "2": audio_item(source, 1.0, 2.0, playrate=1.5)},
    )
    assert main(["reaper", "run", str(request)]) == 0
    status = keyvalue.read(request.parent / "status.txt")
    assert status["state"] == "done", status
    for key, start, seconds in (("1", 3.2, 2.0), ("2", 1.0, 3.0)):
        assert status[f"item.{key}.state"] == "done"
        assert status[f"item.{key}.stems"] == "drums,bass,other,vocals"
        assert float(status[f"item.{key}.offset"]) == 0.0
        span = read_span(source, start, seconds)
        total = sum(
            read_span(Path(status[f"item.{key}.stem.{name}"])).samples
            for name in status[f"item.{key}.stems"].split(",")
        )
        assert total.shape == span.samples.shape
        np.testing.assert_allclose(total, span.samples, atol=1e-5)
    folders = {status["item.1.folder"], status["item.2.folder"]}
    assert len(folders) == 2 and all(str(tmp_path / "media") in f for f in folders)
    assert status["stem.vocals.label"] == "Vocals"
    assert status["stem.vocals.color"].count(",") == 2


def test_splitting_the_same_item_again_never_touches_earlier_stems(
    server, source, tmp_path
) -> None:
    settings = {"address": server.address, "out_dir": tmp_path / "media", "autostart": 0}
    first = write_request(tmp_path / "a", settings, {"1": audio_item(source, 0.0, 1.0)})
    second = write_request(tmp_path / "b", settings, {"1": audio_item(source, 0.0, 1.0)})
    assert main(["reaper", "run", str(first)]) == 0
    assert main(["reaper", "run", str(second)]) == 0
    one, two = (keyvalue.read(r.parent / "status.txt") for r in (first, second))
    assert one["item.1.folder"] != two["item.1.folder"]
    assert Path(one["item.1.stem.vocals"]).is_file() and Path(two["item.1.stem.vocals"]).is_file()


def test_refused_items_are_reported_and_the_rest_is_split(server, source, tmp_path) -> None:
    midi = {"type": "MIDI", "length": 1.0}
    request = write_request(
        tmp_path / "job",
        {"address": server.address, "out_dir": tmp_path / "media", "autostart": 0},
        {"1": midi, "2": audio_item(source, 0.0, 1.0)},
    )
    assert main(["reaper", "run", str(request)]) == 0
    status = keyvalue.read(request.parent / "status.txt")
    assert (status["state"], status["item.1.state"], status["item.2.state"]) == (
        "done",
        "refused",
        "done",
    )
    assert "MIDI" in status["item.1.error"]


def test_server_down_without_autostart_fails_clearly(source, tmp_path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    request = write_request(
        tmp_path / "job",
        {"address": address, "out_dir": tmp_path / "media", "autostart": 0},
        {"1": audio_item(source, 0.0, 1.0)},
    )
    assert main(["reaper", "run", str(request)]) == 2
    status = keyvalue.read(request.parent / "status.txt")
    assert status["state"] == "failed"
    assert "not running" in status["error"] and "daw-bridge serve" in status["fix"]
    assert not list((tmp_path / "media").rglob("*.wav"))


def test_a_relative_output_folder_is_refused(server, source, tmp_path) -> None:
    request = write_request(
        tmp_path / "job",
        {"address": server.address, "out_dir": "relative", "autostart": 0},
        {"1": audio_item(source, 0.0, 1.0)},
    )
    assert main(["reaper", "run", str(request)]) == 2
    status = keyvalue.read(request.parent / "status.txt")
    assert "not an absolute path" in status["error"]


def test_midi_kinds_typed_with_spaces_in_the_settings_are_understood(
    server, source, tmp_path
) -> None:
    request = write_request(
        tmp_path / "job",
        {
            "address": server.address,
            "out_dir": tmp_path / "media",
            "autostart": 0,
            "midi": "drums, bass",
        },
        {"1": audio_item(source, 0.0, 2.0)},
    )
    assert main(["reaper", "run", str(request)]) == 0
    status = keyvalue.read(request.parent / "status.txt")
    assert status["item.1.state"] == "done", status
    assert status["item.1.midi"] == "drums,bass"
    assert Path(status["item.1.midi.bass"]).is_file()


def test_the_status_carries_a_heartbeat_every_second_while_the_runner_lives(
    source, tmp_path
) -> None:
    """The shim tells a live runner from a dead one by this heartbeat (issue 15)."""
    request = write_request(
        tmp_path / "job",
        {"address": f"tcp://127.0.0.1:{free_port()}", "out_dir": tmp_path, "autostart": 0},
        {"1": audio_item(source, 0.0, 1.0)},
    )
    worker = threading.Thread(target=main, args=(["reaper", "run", str(request)],))
    worker.start()
    beats = set()
    while worker.is_alive():  # waits ~3 s for a server that never answers
        path = request.parent / "status.txt"
        status = keyvalue.read(path) if path.exists() else {}
        if status.get("state") == "connecting":
            beats.add(status["heartbeat"])
        time.sleep(0.1)
    worker.join()
    assert len(beats) >= 2  # rewritten while nothing else changed
    status = keyvalue.read(request.parent / "status.txt")
    assert abs(int(status["heartbeat"]) - time.time()) < 5  # the clock Lua's os.time() reads
    assert status["pid"] == str(os.getpid())


def test_an_unexpected_error_ends_in_a_failed_state_not_a_silent_exit(
    server, source, tmp_path, monkeypatch
) -> None:
    def cannot_create(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(runner, "_fresh_folder", cannot_create)
    request = write_request(
        tmp_path / "job",
        {"address": server.address, "out_dir": tmp_path / "media", "autostart": 0},
        {"1": audio_item(source, 0.0, 1.0)},
    )
    assert main(["reaper", "run", str(request)]) == 2
    status = keyvalue.read(request.parent / "status.txt")
    assert status["state"] == "failed"
    assert "No space left on device" in status["error"] and "log.txt" in status["fix"]


def test_status_writes_retry_while_windows_refuses_to_replace_an_open_file(
    tmp_path, monkeypatch
) -> None:
    real_replace, failures = os.replace, []

    def replace(source, target):
        if len(failures) < 2:
            failures.append(target)
            raise PermissionError(13, "The process cannot access the file", str(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    keyvalue.write(tmp_path / "status.txt", {"state": "running"})
    assert len(failures) == 2
    assert keyvalue.read(tmp_path / "status.txt") == {"state": "running"}


class _RecordingClient:
    """Stands in for the server connection: records what a runner submits."""

    def __init__(self) -> None:
        self.submits: list[dict] = []

    def submit(self, path, out_dir, start=0.0, duration=None, **options) -> str:
        self.submits.append({k: v for k, v in options.items() if v is not None})
        return f"job{len(self.submits)}"


@pytest.mark.parametrize(
    ("settings", "sent"),
    [
        ({"keep": "vocals"}, ["vocals"]),
        ({"keep": "drums bass"}, ["drums", "bass"]),
        ({"keep": ""}, None),  # empty: all stems, nothing sent
        ({"keep": "vocals", "two_stems": "vocals"}, None),  # two stems keep one already
    ],
)
def test_stems_to_keep_are_passed_to_the_server_as_a_submit_option(
    source, tmp_path, settings: dict, sent
) -> None:
    request_path = write_request(
        tmp_path / "job", {"out_dir": tmp_path / "media", **settings},
        {"1": audio_item(source, 1.0, 2.0)},
    )  # fmt: skip
    request = runner.read_request(request_path)
    client = _RecordingClient()
    runner.Runner(request_path)._submit(client, request, request.items[0])
    (options,) = client.submits
    assert options.get("keep") == sent
