"""Remote mode (issue 18): a client on another machine splits by bytes, stems come back
as bytes, checked, into its own folder; nobody else's key can touch them.

Loopback only: "another machine" is a second client key in its own config folder,
allowed by the owner as a remote key, and the client is told to send bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from daw_bridge import keys
from daw_bridge.client.client import AccessRefusedError, Client, ServerUnavailableError
from daw_bridge.errors import DawBridgeError
from daw_bridge.reaper import keyvalue
from daw_bridge.server.outbox import Outbox
from tests.conftest import ServerProcess, keys_in, noise, write_wav

DSP = Path("dsp")
OPTIONS = {"midi": ["drums", "bass"], "preset": "karaoke"}


@pytest.fixture(scope="module")
def owner(tmp_path_factory) -> Iterator[Path]:
    """The owner's config folder (keys made on first use) for this module's servers."""
    folder = tmp_path_factory.mktemp("owner")
    previous = os.environ[keys.CONFIG_DIR_ENV]
    os.environ[keys.CONFIG_DIR_ENV] = str(folder)
    yield folder
    os.environ[keys.CONFIG_DIR_ENV] = previous


@pytest.fixture(scope="module")
def server(owner, tmp_path_factory) -> Iterator[ServerProcess]:
    state = tmp_path_factory.mktemp("remote-server")
    process = ServerProcess(DSP, state)
    process.state = state / "server"  # the server's own state (default_state_dir)
    yield process
    process.kill()


def machine(folder: Path, server: ServerProcess, allowed: bool) -> Path:
    """A config folder with a client key of its own that knows the server's key."""
    server_key = keys.server_pair().public
    with keys_in(folder):
        keys.trust(server.address, server_key)
        public = keys.client_pair().public
    if allowed:
        keys.allow(public, folder.name)
    return folder


def client_of(folder: Path, server: ServerProcess) -> Client:
    with keys_in(folder):
        return Client(server.address, timeout=30)


@pytest.fixture(scope="module")
def laptop(server, tmp_path_factory) -> Path:
    return machine(tmp_path_factory.mktemp("config") / "laptop", server, allowed=True)


@pytest.fixture(scope="module")
def other(server, tmp_path_factory) -> Path:
    return machine(tmp_path_factory.mktemp("config") / "other", server, allowed=True)


@pytest.fixture
def song(tmp_path) -> Path:
    seed = int(time.time_ns() % 100_000)  # never a cache hit of an earlier test
    return write_wav(tmp_path / "song.wav", noise(seconds=2.0, seed=seed))


def done(client: Client, job: str) -> dict:
    final = client.wait(job)
    assert final["state"] == "done", final
    return final


def area(server: ServerProcess, job: str) -> Path:
    return server.state / "outbox" / job


def files_in(folder: Path) -> list[str]:
    """Every entry under ``folder``, hidden ones included (relative, sorted)."""
    if not folder.exists():
        return []
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def read(path: str | Path) -> np.ndarray:
    return soundfile.read(path, dtype="float32", always_2d=True)[0]


# -- a remote split ---------------------------------------------------------------------


def test_a_remote_key_splits_by_bytes_and_gets_exactly_what_path_mode_gives(
    server, laptop, song, tmp_path
):
    with client_of(laptop, server) as remote:
        final = done(remote, remote.submit_file(song, **OPTIONS))
        job = final["job"]
        result = final["result"]
        assert not result["cached"] and result["folder"] == ""  # no server path is shown
        listed = {entry["path"]: entry for entry in result["files"]}
        assert set(result["stems"].values()) | {"manifest.json"} <= set(listed)
        assert set(result["midi"].values()) | set(result["processed"].values()) <= set(listed)
        assert any(path.startswith("karaoke/") for path in listed)  # a preset's subfolder
        assert os.stat(area(server, job)).st_mode & 0o777 == 0o700
        local = remote.download(final, tmp_path / "bytes")
    # The files are here, each as listed; the server's copy and the job are gone.
    for relative, entry in listed.items():
        data = (tmp_path / "bytes" / relative).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    assert not [name for name in files_in(tmp_path / "bytes") if name.startswith(".")]
    assert not area(server, job).exists()
    with client_of(laptop, server) as remote, pytest.raises(DawBridgeError, match="No job"):
        remote.result(job)
    # Path mode on a fresh server (no cache shared) gives the very same samples.
    fresh = ServerProcess(DSP, tmp_path / "fresh")
    try:
        with Client(fresh.address, timeout=30) as mine:
            by_path = done(mine, mine.submit(song, tmp_path / "path", **OPTIONS))["result"]
    finally:
        fresh.kill()
    assert not by_path["cached"]
    for field in ("stems", "processed"):
        assert set(local[field]) == set(by_path[field])
        for name, path in local[field].items():
            assert Path(path).is_relative_to(tmp_path / "bytes")
            np.testing.assert_array_equal(read(path), read(by_path[field][name]))
    for kind, path in local["midi"].items():
        assert Path(path).read_bytes() == Path(by_path["midi"][kind]).read_bytes()
    text = (tmp_path / "bytes" / "manifest.json").read_text()
    assert "daw-bridge-uploads" not in text and str(server.state) not in text
    manifest, by_path_manifest = (
        comparable(json.loads(text)),
        comparable(json.loads((tmp_path / "path" / "manifest.json").read_text())),
    )
    assert manifest.pop("input_path") == "song.wav"  # the sender's name, no server path
    assert by_path_manifest.pop("input_path") == str(song)
    assert manifest == by_path_manifest


def comparable(manifest: dict) -> dict:
    """A manifest without what differs from run to run (times, the cache's records)."""
    for name in ("created", "separation_seconds", "sha256"):
        manifest.pop(name, None)
    manifest["input"].pop("file_modified", None)
    manifest["input_path"] = manifest["input"].pop("path")
    return manifest


def test_a_key_the_owner_never_allowed_is_refused(server, tmp_path, song):
    stranger = machine(tmp_path / "stranger", server, allowed=False)
    with client_of(stranger, server) as client, pytest.raises(AccessRefusedError):
        client.submit_file(song)
    assert server.process.poll() is None


def test_another_allowed_key_can_neither_download_nor_cancel_nor_release_my_job(
    server, laptop, other, tmp_path
):
    long = write_wav(tmp_path / "long.wav", noise(seconds=60.0, seed=7))
    with client_of(laptop, server) as mine, client_of(other, server) as theirs:
        running = mine.submit_file(long)
        with pytest.raises(DawBridgeError, match="No job"):
            theirs.cancel(running)
        mine.cancel(running)
        assert mine.wait(running)["state"] == "cancelled"
        assert not area(server, running).exists()  # nothing to fetch from a cancelled job
        final = done(mine, mine.submit_file(write_wav(tmp_path / "s.wav", noise(seed=8))))
        job, first = final["job"], final["result"]["files"][0]["path"]
        for request in (
            {"type": "fetch", "job": job, "path": first, "offset": 0},
            {"type": "delivered", "job": job},
            {"type": "cancel", "job": job},
            {"type": "result", "job": job},
        ):
            with pytest.raises(DawBridgeError, match="No job"):
                theirs.request(request)
        with pytest.raises(DawBridgeError, match="No job"):
            theirs.download(final, tmp_path / "theirs")
        assert files_in(tmp_path / "theirs") == []
        assert area(server, job).is_dir()
        mine.download(final, tmp_path / "mine")
    assert (tmp_path / "mine" / "manifest.json").is_file()


def test_an_interrupted_download_leaves_nothing_and_can_be_run_again(
    server, laptop, song, tmp_path, monkeypatch
):
    with client_of(laptop, server) as remote:
        final = done(remote, remote.submit_file(song))
        fetch, calls = remote._fetch_chunk, []

        def dies_midway(*args: object) -> bytes:
            calls.append(args)
            if len(calls) == 3:  # two files fetched whole, the third not
                raise ServerUnavailableError("No daw-bridge server answered.", "Start one.")
            return fetch(*args)

        monkeypatch.setattr(remote, "_fetch_chunk", dies_midway)
        with pytest.raises(ServerUnavailableError):
            remote.download(final, tmp_path / "stems")
        assert files_in(tmp_path / "stems") == []
        assert area(server, final["job"]).is_dir()  # still there for the retry
        monkeypatch.setattr(remote, "_fetch_chunk", fetch)
        local = remote.download(final, tmp_path / "stems")
    assert sorted(local["stems"]) == ["bass", "drums", "other", "vocals"]
    assert files_in(tmp_path / "stems") == sorted(
        ["manifest.json", *(f"{name}.wav" for name in local["stems"])]
    )
    assert not area(server, final["job"]).exists()


def test_a_download_chunk_that_does_not_match_its_checksum_is_refused(
    server, laptop, song, tmp_path, monkeypatch
):
    with client_of(laptop, server) as remote:
        final = done(remote, remote.submit_file(song))
        request = remote.request

        def tampered(message: dict, timeout: float | None = None) -> dict:
            reply = request(message, timeout)
            if message["type"] == "fetch":
                data = bytearray(reply["data"].encode())
                data[10] = ord("A") if data[10] != ord("A") else ord("B")
                reply = {**reply, "data": data.decode()}
            return reply

        monkeypatch.setattr(remote, "request", tampered)
        with pytest.raises(DawBridgeError, match="arrived damaged") as refused:
            remote.download(final, tmp_path / "stems")
        assert "nothing was written" in refused.value.problem
        assert files_in(tmp_path / "stems") == []
        monkeypatch.setattr(remote, "request", request)
        remote.download(final, tmp_path / "stems")
    assert (tmp_path / "stems" / "vocals.wav").is_file()


def test_an_upload_chunk_that_does_not_match_its_checksum_is_refused_not_written(
    server, laptop, song, tmp_path
):
    import base64

    data = song.read_bytes()
    with client_of(laptop, server) as remote:
        upload = remote.request(
            {
                "type": "upload",
                "name": "song.wav",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )["upload"]
        chunk = {"type": "chunk", "upload": upload, "offset": 0}
        chunk["sha256"] = hashlib.sha256(data).hexdigest()
        damaged = data[:100] + b"\x00" + data[101:]
        with pytest.raises(DawBridgeError, match="does not match its sha256"):
            remote.request({**chunk, "data": base64.b64encode(damaged).decode()})
        reply = remote.request({**chunk, "data": base64.b64encode(data).decode()})
        assert reply["received"] == len(data)  # the damaged one left nothing behind
        job = remote._submit({"upload": upload}, None, {})
        local = remote.download(done(remote, job), tmp_path / "stems")
    mix = read(song)
    np.testing.assert_allclose(sum(read(path) for path in local["stems"].values()), mix, atol=1e-5)


def test_fetch_requests_that_leave_the_jobs_files_are_refused_and_the_server_keeps_serving(
    server, laptop, song
):
    with client_of(laptop, server) as remote:
        final = done(remote, remote.submit_file(song))
        job = final["job"]
        size = final["result"]["files"][0]["size"]
        for path, offset, problem in (
            ("../../jobs/x.json", 0, "delivered no file"),
            ("/etc/passwd", 0, "delivered no file"),
            ("vocals.wav", size + 1, "past its end"),
        ):
            with pytest.raises(DawBridgeError, match=problem):
                remote.request({"type": "fetch", "job": job, "path": path, "offset": offset})
        with pytest.raises(DawBridgeError, match="sent its stems back as bytes"):
            remote.apply(job, "karaoke")
        remote.request({"type": "delivered", "job": job})
        assert not area(server, job).exists()
        with pytest.raises(DawBridgeError, match="No job"):
            remote.request({"type": "fetch", "job": job, "path": "vocals.wav", "offset": 0})
        assert remote.hello()["protocol"] == 1


def test_the_owner_keeps_path_mode_and_cannot_release_a_path_job(server, song, tmp_path):
    with Client(server.address, timeout=30) as mine:
        final = done(mine, mine.submit(song, tmp_path / "here"))
        assert Path(final["result"]["stems"]["vocals"]).parent == tmp_path / "here"
        with pytest.raises(DawBridgeError, match="nothing of it to release"):
            mine.request({"type": "delivered", "job": final["job"]})
        with pytest.raises(DawBridgeError, match="no files to download"):
            mine.download(final, tmp_path / "elsewhere")
    assert (tmp_path / "here" / "vocals.wav").is_file()


# -- the command line and REAPER ----------------------------------------------------------


def test_the_command_line_splits_on_a_remote_server_into_a_local_folder(
    server, laptop, song, tmp_path
):
    command = [sys.executable, "-m", "daw_bridge", "client", "split", str(song)]
    command += ["--out", str(tmp_path / "out"), "--server", server.address, "--send-bytes", "-q"]
    env = {**os.environ, keys.CONFIG_DIR_ENV: str(laptop)}
    ran = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert str(tmp_path / "out" / "vocals.wav") in ran.stdout
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "bass.wav",
        "drums.wav",
        "manifest.json",
        "other.wav",
        "vocals.wav",
    ]


def test_the_reaper_runner_sends_bytes_to_a_server_that_is_not_local(
    server, laptop, song, tmp_path
):
    from daw_bridge.reaper import runner

    folder = tmp_path / "jobs" / "1"
    folder.mkdir(parents=True)
    values = {
        "version": 1,
        "address": server.address,
        "send_bytes": 1,  # loopback stands in for another machine
        "out_dir": tmp_path / "media",
        "autostart": 0,
        "items": "1",
        "item.1.type": "WAVE",
        "item.1.file": song,
        "item.1.startoffs": 0.5,
        "item.1.length": 1.0,
        "item.1.playrate": 1.0,
        "item.1.loop": 0,
        "item.1.source_length": 2.0,
        "item.1.name": "take",
    }
    keyvalue.write(folder / "request.txt", values)
    with keys_in(laptop):
        assert runner.run(folder / "request.txt") == 0
    status = keyvalue.read(folder / "status.txt")
    assert status["state"] == "done", status
    stem = Path(status["item.1.stem.vocals"])
    assert stem.is_file() and stem.parent.parent == tmp_path / "media" / "daw-bridge"
    assert status["item.1.folder"] == str(stem.parent)
    assert read(stem).shape[0] == 44100  # the played second only


# -- the server's side ------------------------------------------------------------------


def test_an_outbox_area_goes_when_its_job_is_no_longer_wanted(tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    kept, dropped = outbox.folder("a" * 16), outbox.folder("b" * 16)
    (kept / "vocals.wav").write_bytes(b"1234")
    (dropped / "vocals.wav").write_bytes(b"5678")
    assert outbox.listing("a" * 16) == [
        {"path": "vocals.wav", "size": 4, "sha256": hashlib.sha256(b"1234").hexdigest()}
    ]
    outbox.prune(lambda job: job == "a" * 16)
    assert kept.is_dir() and not dropped.exists()
    with pytest.raises(ValueError):
        outbox.folder("../x")
