"""The client stays light and writes a status file Lua can parse."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import zmq

from daw_bridge.client.client import Client, ServerUnavailableError
from daw_bridge.client.status_file import render, write_status
from daw_bridge.errors import DawBridgeError
from daw_bridge.protocol import decode, encode
from tests.conftest import as_server, free_address


def test_client_never_imports_torch_or_numpy():
    code = (
        "import sys, daw_bridge.cli, daw_bridge.client.client, daw_bridge.client.status_file; "
        "heavy = [m for m in ('torch', 'numpy', 'pedalboard') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_status_file_is_key_value_lines(tmp_path):
    event = {
        "job": "abc",
        "state": "failed",
        "progress": 0.5,
        "error": {"problem": "Bad\nfile", "fix": "Re-export it."},
    }
    path = tmp_path / "status.txt"
    write_status(path, event)
    lines = path.read_text().splitlines()
    assert lines == [
        "job=abc",
        "state=failed",
        "progress=0.5000",
        "error=Bad file",
        "fix=Re-export it.",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["status.txt"]


def test_status_file_lists_stems():
    text = render(
        {
            "job": "j",
            "state": "done",
            "progress": 1.0,
            "result": {"folder": "/x", "cached": True, "stems": {"vocals": "/x/vocals.wav"}},
        }
    )
    assert "stem.vocals=/x/vocals.wav" in text and "cached=true" in text


def test_status_file_lists_processed_stems_after_the_raw_ones():
    result = {
        "folder": "/x",
        "stems": {"vocals": "/x/vocals.wav", "drums": "/x/drums.wav"},
        "preset": "karaoke",
        "processed": {"vocals": "/x/karaoke/vocals.wav", "drums": "/x/karaoke/drums.wav"},
    }
    lines = render({"job": "j", "state": "done", "progress": 1.0, "result": result}).splitlines()
    assert lines[-5:] == [
        "stem.vocals=/x/vocals.wav",
        "stem.drums=/x/drums.wav",
        "preset=karaoke",
        "processed.vocals=/x/karaoke/vocals.wav",
        "processed.drums=/x/karaoke/drums.wav",
    ]


def test_a_preset_given_as_a_path_is_sent_absolute(tmp_path, monkeypatch):
    from daw_bridge.client.client import preset_reference

    monkeypatch.chdir(tmp_path)
    assert preset_reference("karaoke") == "karaoke"
    assert preset_reference("mine.toml") == str(tmp_path / "mine.toml")
    assert preset_reference("sub/x.toml") == str(tmp_path / "sub" / "x.toml")


def _fake_server(address: str, replies: list[dict], seen: list[dict]) -> None:
    """Answers each request with the next of ``replies`` (plus its ``req``), sends no events."""
    context = zmq.Context.instance()
    socket = as_server(context.socket(zmq.ROUTER))
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(address)
    try:
        for reply in replies:
            if not socket.poll(10_000):
                return
            client, frame = socket.recv_multipart()
            message = decode(frame)
            seen.append(message)
            socket.send_multipart([client, encode({**reply, "req": message["req"]})])
    finally:
        socket.close(0)


def test_a_waiting_client_asks_again_when_a_jobs_events_stop_instead_of_giving_up():
    """A lost final event must not look like a dead server (it did, once, under load)."""
    address, seen = free_address(), []
    running = {"type": "job", "job": "j1", "state": "running", "progress": 0.5}
    done = {"type": "job", "job": "j1", "state": "done", "progress": 1.0, "result": {}}
    server = threading.Thread(target=_fake_server, args=(address, [running, done], seen))
    server.start()
    with Client(address, timeout=1.0) as client:
        started = time.monotonic()
        final = client.wait("j1")
    server.join()
    assert final["state"] == "done"
    assert [m["type"] for m in seen] == ["watch", "watch"]
    assert 0.9 < time.monotonic() - started < 5.0  # one silence of the client's timeout


def test_a_waiting_client_still_reports_a_server_that_stopped_answering():

    address, seen = free_address(), []
    running = {"type": "job", "job": "j1", "state": "running", "progress": 0.5}
    server = threading.Thread(target=_fake_server, args=(address, [running], seen))
    server.start()
    with (
        Client(address, timeout=1.0) as client,
        pytest.raises(ServerUnavailableError, match="No daw-bridge server answered"),
    ):
        client.wait("j1")
    server.join()


def test_a_request_over_the_servers_message_cap_is_refused_before_it_is_sent():
    """The server drops larger messages without a word: the client would wait for nothing."""
    with Client(free_address(), timeout=5, max_message_bytes=2**20) as client:
        started = time.monotonic()
        with pytest.raises(DawBridgeError) as error:
            client.submit("/tmp/clip.wav", "/tmp/out", model="m" * 2**20)
    assert time.monotonic() - started < 1.0
    assert "most 1 MiB in one message" in error.value.problem
    assert "in chunks" in str(error.value.fix)
