"""Audio sent as bytes travels in chunks under the message cap, checked, private, short-lived."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from daw_bridge.client.client import Client
from daw_bridge.errors import DawBridgeError
from daw_bridge.server import uploads as module
from daw_bridge.server.uploads import Uploads
from tests.conftest import ServerProcess, noise, write_wav

DSP = Path("dsp")


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(module.tempfile, "tempdir", None)  # re-read TMPDIR
    found = Uploads(tmp_path / "state")
    (tmp_path / "state").mkdir()
    found.start()
    yield found
    found.stop()


def chunks(data: bytes, size: int) -> list[tuple[int, str]]:
    return [
        (offset, base64.b64encode(data[offset : offset + size]).decode())
        for offset in range(0, len(data), size)
    ]


def send(uploads: Uploads, owner: str, data: bytes, name: str = "a.wav", size: int = 3) -> str:
    upload = uploads.begin(owner, name, len(data), hashlib.sha256(data).hexdigest())
    for offset, piece in chunks(data, size):
        uploads.append(owner, upload, offset, piece)
    return upload


def test_chunks_reassemble_the_file_in_a_private_folder_outside_the_state(uploads, tmp_path):
    data = os.urandom(1000)
    upload = send(uploads, "me", data, "song.FLAC", size=64)
    uploads.claim("me", upload)
    path = uploads.path(upload)
    assert path.read_bytes() == data
    assert path.suffix == ".flac"  # formats are read by their suffix
    assert path.parent.parent == tmp_path / "tmp"
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    uploads.release(upload)  # its job ended
    assert not path.exists()


def test_a_file_whose_bytes_changed_on_the_way_is_refused_and_dropped(uploads):
    data = os.urandom(100)
    upload = uploads.begin("me", "a.wav", 100, hashlib.sha256(b"other").hexdigest())
    uploads.append("me", upload, 0, base64.b64encode(data).decode())
    with pytest.raises(DawBridgeError, match="does not match its sha256"):
        uploads.claim("me", upload)
    assert list(uploads.folder.iterdir()) == []


def test_an_incomplete_upload_cannot_be_submitted(uploads):
    data = os.urandom(100)
    upload = uploads.begin("me", "a.wav", 100, hashlib.sha256(data).hexdigest())
    uploads.append("me", upload, 0, base64.b64encode(data[:60]).decode())
    with pytest.raises(DawBridgeError, match="incomplete: 60 of 100 bytes"):
        uploads.claim("me", upload)


@pytest.mark.parametrize(
    ("offset", "piece", "problem"),
    [
        (10, b"x", "does not follow on"),  # a chunk skipped
        (0, b"x" * 11, "goes past its end"),
    ],
)
def test_chunks_out_of_order_or_past_the_announced_size_are_refused(
    uploads, offset, piece, problem
):
    upload = uploads.begin("me", "a.wav", 10, "0" * 64)
    with pytest.raises(DawBridgeError, match=problem):
        uploads.append("me", upload, offset, base64.b64encode(piece).decode())


def test_a_chunk_that_is_not_base64_is_refused(uploads):
    upload = uploads.begin("me", "a.wav", 10, "0" * 64)
    with pytest.raises(DawBridgeError, match="not valid base64"):
        uploads.append("me", upload, 0, "not base64 at all!")


def test_another_key_can_neither_add_to_nor_submit_my_upload(uploads):
    data = os.urandom(10)
    upload = uploads.begin("me", "a.wav", 10, hashlib.sha256(data).hexdigest())
    with pytest.raises(DawBridgeError, match="No open upload"):
        uploads.append("guest", upload, 0, base64.b64encode(data).decode())
    uploads.append("me", upload, 0, base64.b64encode(data).decode())
    with pytest.raises(DawBridgeError, match="No open upload"):
        uploads.claim("guest", upload)


@pytest.mark.parametrize(
    ("size", "sha256", "problem"),
    [
        (0, "0" * 64, "1 byte to 4 GiB"),
        (module.MAX_UPLOAD_BYTES + 1, "0" * 64, "1 byte to 4 GiB"),
        (10, "XYZ", "64 lowercase hex digits"),
    ],
)
def test_an_upload_of_no_or_too_many_bytes_or_a_bad_checksum_is_refused(
    uploads, size, sha256, problem
):
    with pytest.raises(DawBridgeError, match=problem):
        uploads.begin("me", "a.wav", size, sha256)


def test_one_key_may_keep_only_a_few_uploads_open(uploads):
    for _ in range(module.MAX_OPEN_PER_KEY):
        uploads.begin("me", "a.wav", 10, "0" * 64)
    with pytest.raises(DawBridgeError, match="uploads open already"):
        uploads.begin("me", "a.wav", 10, "0" * 64)
    uploads.begin("someone else", "a.wav", 10, "0" * 64)


def test_an_upload_larger_than_the_free_space_is_refused_before_a_byte_arrives(
    uploads, monkeypatch
):
    free = type("Usage", (), {"free": 100 * 2**20})()
    monkeypatch.setattr(module.shutil, "disk_usage", lambda _path: free)
    with pytest.raises(DawBridgeError, match=r"Not enough space for a 200 MiB upload"):
        uploads.begin("me", "a.wav", 200 * 2**20, "0" * 64)
    assert list(uploads.folder.iterdir()) == []


def test_an_upload_nobody_submits_is_dropped_after_the_idle_time(uploads):
    upload = uploads.begin("me", "a.wav", 10, "0" * 64)
    uploads.expire(now=module.time.monotonic() + module.IDLE_SECONDS - 5)
    uploads.append("me", upload, 0, base64.b64encode(b"12345").decode())  # still open
    uploads.expire(now=module.time.monotonic() + module.IDLE_SECONDS + 5)
    with pytest.raises(DawBridgeError, match="No open upload"):
        uploads.append("me", upload, 5, base64.b64encode(b"67890").decode())
    assert list(uploads.folder.iterdir()) == []


def test_a_killed_servers_uploads_go_when_the_next_one_starts(tmp_path, uploads):
    send(uploads, "me", b"left behind")
    killed = uploads.folder  # never stopped: as after kill -9
    later = Uploads(tmp_path / "state")
    later.start()
    assert not killed.exists() and later.folder.is_dir()
    folder = later.folder
    later.stop()
    assert not folder.exists()


def test_a_folder_that_is_not_ours_is_never_removed(tmp_path, uploads):
    """The record names a folder; only a private upload folder of this user goes."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "song.wav").write_bytes(b"mine")
    (tmp_path / "state" / "uploads-folder").write_text(str(precious))
    later = Uploads(tmp_path / "state")
    later.start()
    assert (precious / "song.wav").read_bytes() == b"mine"
    later.stop()


# -- through a real server ----------------------------------------------------------------


def test_a_file_larger_than_one_message_is_split_as_if_given_by_path(tmp_path):
    """Before: audio went in one message, so at most about 12 MB could be sent (here, with
    a 1 MiB cap, a file of 5 MB is sent in chunks of under 1 MiB)."""
    song = write_wav(tmp_path / "song.wav", noise(seconds=15.0, seed=5))  # 5.3 MB of float32
    cap = 2**20
    assert song.stat().st_size > 5 * cap
    server = ServerProcess(DSP, tmp_path / "state", "--max-message-mb", "1")
    try:
        with Client(server.address, timeout=60, max_message_bytes=cap) as client:
            sent = client.wait(client.submit_audio(song.read_bytes(), "song.wav", tmp_path / "b"))
            assert sent["state"] == "done", sent
            by_path = client.wait(client.submit(song, tmp_path / "p"))
    finally:
        server.kill()
    assert by_path["state"] == "done" and by_path["result"]["cached"]  # the very same audio
    mix, _ = soundfile.read(song, dtype="float32")
    stems = [soundfile.read(path, dtype="float32")[0] for path in sent["result"]["stems"].values()]
    np.testing.assert_allclose(np.sum(stems, axis=0), mix, atol=1e-5)
    for name, path in sent["result"]["stems"].items():
        assert Path(path).read_bytes() == Path(by_path["result"]["stems"][name]).read_bytes()
