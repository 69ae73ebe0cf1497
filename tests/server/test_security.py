"""Attacks on the server (issue 14): only its owner gets in, nothing escapes a job.

Each test tries one finding the way an attacker would: a ZeroMQ client with
no keys, a second client key (one the owner allowed as a remote key, one never
allowed), another OS user of the machine, and a program squatting the
server's port. This module's server keeps its state and the owner's keys
under a folder every user may enter, so only their own permissions protect
them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from daw_bridge import keys
from daw_bridge.audio.io import read_span
from daw_bridge.client.client import AccessRefusedError, Client
from daw_bridge.errors import DawBridgeError
from daw_bridge.protocol import FINAL_STATES, encode
from daw_bridge.server.access import confine, is_local
from tests.conftest import ServerProcess, free_address, free_port, keys_in, noise, write_wav

DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A folder other users may enter: only the server's own permissions keep them out."""
    folder = Path(tempfile.mkdtemp(prefix="daw-bridge-attacks-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def owner(base: Path) -> Iterator[Path]:
    """The owner's config folder (keys made on first use) for this module's clients and server."""
    previous = os.environ[keys.CONFIG_DIR_ENV]
    os.environ[keys.CONFIG_DIR_ENV] = str(base / "config")
    yield base / "config"
    os.environ[keys.CONFIG_DIR_ENV] = previous


@pytest.fixture(scope="module")
def server(owner, base, tiny_checkpoint) -> Iterator[ServerProcess]:
    uploads = base / "uploads"  # the server's temporary folder
    uploads.mkdir()
    process = ServerProcess(tiny_checkpoint, base / "state", env={"TMPDIR": str(uploads)})
    process.state = base / "state" / "server"  # the server's own state (default_state_dir)
    process.uploads = uploads
    yield process
    process.kill()


def client_with(folder: Path, address: str) -> Client:
    with keys_in(folder):
        return Client(address, timeout=20)


def public_key_in(folder: Path) -> str:
    with keys_in(folder):
        return keys.client_pair().public


def second_key(folder: Path, server: ServerProcess, allowed: bool) -> Path:
    """A config folder with a client key of its own; it knows the server's public key."""
    server_key = keys.server_pair().public
    with keys_in(folder):
        keys.trust(server.address, server_key)
    if allowed:
        keys.allow(public_key_in(folder), folder.name)
    return folder


@pytest.fixture(scope="module")
def intruder(base, server) -> Path:
    """A second client key, allowed by the owner as a remote key: not the owner."""
    return second_key(base / "intruder", server, allowed=True)


@pytest.fixture(scope="module")
def stranger(base, server) -> Path:
    """A client key the owner never allowed."""
    return second_key(base / "stranger", server, allowed=False)


@pytest.fixture
def song(tmp_path) -> Path:
    return write_wav(tmp_path / "song.wav", noise(seconds=1.0, seed=int(time.time_ns() % 1000)))


def until(client: Client, job: str, states: tuple[str, ...]) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while (state := client.result(job))["state"] not in states:
        assert time.monotonic() < deadline, f"job {job} still {state['state']}"
        time.sleep(0.05)
    return state


def finish(client: Client, job: str) -> dict:
    return until(client, job, FINAL_STATES)


def job_records(server: ServerProcess) -> set[str]:
    return {path.name for path in (server.state / "jobs").glob("*.json")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- at the door ---------------------------------------------------------------------


def test_a_client_without_keys_is_refused_before_a_request_is_read(server, song, tmp_path):
    before = job_records(server)
    requests = [
        {"type": "status"},
        {"type": "submit", "source": {"path": str(song)}, "out_dir": str(tmp_path / "plain")},
        {"type": "shutdown"},
    ]
    with zmq.Context.instance().socket(zmq.DEALER) as plain:
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(server.address)
        for request in requests:
            plain.send(encode(request))
        assert not plain.poll(2000), "a client without keys got a reply"
    assert job_records(server) == before and not (tmp_path / "plain").exists()
    assert server.process.poll() is None


def test_a_key_the_owner_never_allowed_is_refused_at_once_with_the_fix(server, stranger):
    started = time.monotonic()
    with (
        client_with(stranger, server.address) as client,
        pytest.raises(AccessRefusedError) as refused,
    ):
        client.status()
    assert time.monotonic() - started < 2.0  # told at once, not taken for a dead server
    public = public_key_in(stranger)
    assert public in refused.value.problem
    assert f"daw-bridge keys allow '{public}'" in refused.value.fix


def test_a_revoked_key_is_refused_from_its_next_request(server, base):
    folder = second_key(base / "revoked", server, allowed=True)
    with client_with(folder, server.address) as client:
        assert client.hello()["protocol"] == 1
        keys.revoke(public_key_in(folder))
        with pytest.raises(DawBridgeError, match="no longer allowed"):
            client.status()
    with client_with(folder, server.address) as client, pytest.raises(AccessRefusedError):
        client.hello()


@pytest.mark.parametrize("squatter", ["no keys", "another server key"])
def test_the_owners_client_tells_nothing_to_a_program_squatting_the_servers_port(squatter):
    """Another user may listen on the port first; it cannot prove it holds the server's key."""
    address = free_address()
    with zmq.Context.instance().socket(zmq.ROUTER) as fake:
        fake.setsockopt(zmq.LINGER, 0)
        if squatter == "another server key":
            fake.curve_server = True
            fake.curve_secretkey = zmq.curve_keypair()[1]
        fake.bind(address)
        with Client(address, timeout=2) as client, pytest.raises(AccessRefusedError) as refused:
            client.submit("/home/me/secret-song.wav", "/home/me/stems")
        assert "not the daw-bridge server this client knows" in refused.value.problem
        assert "daw-bridge keys trust" in refused.value.fix
        assert not fake.poll(500), "the squatter received a request"


# -- jobs belong to the key that submitted them ----------------------------------------


def test_another_key_sees_none_of_the_owners_jobs_and_cannot_touch_them(server, intruder, tmp_path):
    long = write_wav(tmp_path / "long.wav", noise(seconds=30.0, seed=41))
    with Client(server.address, timeout=20) as mine:
        job = mine.submit(long, tmp_path / "mine")
        until(mine, job, ("running",))
        assert mine.status()["running"] == job
        with client_with(intruder, server.address) as other:
            status = other.status()
            assert (status["running"], status["queued"]) == (None, 0)  # no id to aim at
            for request in ("result", "watch", "cancel"):
                with pytest.raises(DawBridgeError, match="No job"):
                    other.request({"type": request, "job": job})
        assert mine.result(job)["state"] == "running"  # not cancelled
        mine.cancel(job)
        assert finish(mine, job)["state"] == "cancelled"


def test_another_key_cannot_apply_a_preset_into_the_owners_finished_job(
    server, intruder, song, tmp_path
):
    with Client(server.address, timeout=20) as mine:
        done = finish(mine, mine.submit(song, tmp_path / "done"))
    assert done["state"] == "done"
    with (
        client_with(intruder, server.address) as other,
        pytest.raises(DawBridgeError, match="No job"),
    ):
        other.apply(done["job"], "karaoke")
    time.sleep(0.5)
    assert not (tmp_path / "done" / "karaoke").exists()


def test_only_the_owner_may_shut_the_server_down(server, intruder):
    with (
        client_with(intruder, server.address) as other,
        pytest.raises(DawBridgeError, match="Only the owner of this server may shut it down"),
    ):
        other.shutdown()
    time.sleep(0.5)
    assert server.process.poll() is None
    with Client(server.address, timeout=20) as mine:
        assert mine.hello()["protocol"] == 1


# -- only the owner names files on the server's machine --------------------------------


@pytest.fixture
def plugin_preset(tmp_path) -> Path:
    """A valid preset whose chain loads a VST3 bundle the attacker wrote (code execution)."""
    bundle = tmp_path / "Evil.vst3"
    bundle.mkdir()
    (bundle / "payload.so").write_bytes(b"\x7fELF attacker's code")
    preset = tmp_path / "evil.toml"
    preset.write_text(
        f'name = "evil"\n[[stems.vocals.chain]]\nplugin = "vst3"\npath = "{bundle}"\n'
    )
    return preset


def attacker_requests(song: Path, out: Path, preset: Path, checkpoint: Path) -> dict:
    """Finding -> (what the refusal must name, the request)."""
    upload = {"upload": "0123456789abcdef"}  # bytes, not a path: any key may send them
    submit = {"type": "submit", "source": upload, "out_dir": str(out)}
    return {
        "read any file": ("source path", {**submit, "source": {"path": str(song)}}),
        "write anywhere": ("out_dir", submit),
        "load a plugin": (f"the preset '{preset}'", {**submit, "options": {"preset": str(preset)}}),
        "load a model file": (
            f"the model '{checkpoint}'",
            {**submit, "options": {"model": str(checkpoint)}},
        ),
        "load a plugin on apply": (
            f"the preset '{preset}'",
            {"type": "apply", "job": "0123456789abcdef", "preset": str(preset)},
        ),
    }


@pytest.mark.parametrize(
    "finding",
    [
        "read any file",
        "write anywhere",
        "load a plugin",
        "load a model file",
        "load a plugin on apply",
    ],
)
def test_another_key_may_not_name_files_on_the_servers_machine(
    server, intruder, song, tmp_path, plugin_preset, tiny_checkpoint, finding
):
    requests = attacker_requests(song, tmp_path / "out", plugin_preset, tiny_checkpoint)
    named, request = requests[finding]
    before = job_records(server)
    with (
        client_with(intruder, server.address) as other,
        pytest.raises(DawBridgeError, match="Only the owner of this server may name files") as no,
    ):
        other.request(request)
    assert named in no.value.problem
    assert job_records(server) == before  # no job: nothing was read, loaded or written
    assert not (tmp_path / "out").exists()


def test_another_key_may_use_built_in_presets_and_models_by_name_only(tmp_path, monkeypatch):
    monkeypatch.setenv("DAW_BRIDGE_PRESET_DIR", str(tmp_path))
    for name in ("mine", "karaoke"):  # the owner's own, and one hiding a built-in
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\n[stems.vocals]\ngain_db = -1\n')
    confine({"type": "apply", "job": "j", "preset": "acapella"}, owner=False, private=[])
    for preset in ("mine", "karaoke", str(tmp_path / "mine.toml")):
        with pytest.raises(DawBridgeError, match=f"the preset '{preset}'"):
            confine({"type": "apply", "job": "j", "preset": preset}, owner=False, private=[])
        confine({"type": "apply", "job": "j", "preset": preset}, owner=True, private=[])


def test_the_owners_output_folder_may_not_be_inside_the_servers_own_folders(server, owner, song):
    for inside in (
        server.state / "stems" / "loot",  # the stem cache
        server.state / "jobs",  # job records
        server.state.parent / "w" / "loot",  # downloaded and exported models
        owner / "keys" / "loot",
    ):
        before = set(inside.parent.iterdir())
        with (
            Client(server.address, timeout=20) as mine,
            pytest.raises(DawBridgeError, match="inside the server's own folder"),
        ):
            mine.submit(song, inside)
        assert set(inside.parent.iterdir()) == before, inside


def test_uploaded_audio_is_never_written_into_the_servers_state(server, tmp_path):
    data = write_wav(
        tmp_path / "upload.wav", noise(seconds=30.0, seed=43), bit_depth=16
    ).read_bytes()
    with Client(server.address, timeout=20) as mine:
        job = mine.submit_audio(data, "upload.wav", tmp_path / "up")
        try:
            [upload] = server.uploads.glob("daw-bridge-uploads-*/*.wav")  # this run's folder
            assert upload.read_bytes() == data
            assert mode(upload) == 0o600 and mode(upload.parent) == 0o700
            copies = [
                path
                for path in server.state.rglob("*")
                if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
            ]
            assert copies == []
        finally:
            mine.cancel(job)
        finish(mine, job)
        deadline = time.monotonic() + DEADLINE_S
        while upload.exists():  # removed with its job (the worker lets it go)
            assert time.monotonic() < deadline, "the upload outlived its job"
            time.sleep(0.05)


# -- the state and the cache ------------------------------------------------------------


def test_the_servers_state_job_records_and_keys_are_private(server, owner, song, tmp_path):
    with Client(server.address, timeout=20) as mine:
        assert finish(mine, mine.submit(song, tmp_path / "m"))["state"] == "done"
    assert mode(server.state) == 0o700
    records = list((server.state / "jobs").glob("*.json"))
    assert records and {mode(record) for record in records} == {0o600}
    assert mode(owner / "keys") == 0o700
    assert {mode(path) for path in (owner / "keys").iterdir()} == {0o600}


def test_a_tampered_cache_entry_is_separated_again_not_served(server, tmp_path):
    song = write_wav(tmp_path / "t.wav", noise(seconds=2.0, seed=45))
    cache = server.state / "stems"
    before = set(cache.iterdir())
    with Client(server.address, timeout=20) as mine:
        first = finish(mine, mine.submit(song, tmp_path / "a"))
        separated = read_span(tmp_path / "a" / "vocals.wav").samples
        [entry] = [p for p in set(cache.iterdir()) - before if not p.name.startswith(".")]
        write_wav(entry / "vocals.wav", noise(seconds=2.0, seed=99))  # the attacker's audio
        again = finish(mine, mine.submit(song, tmp_path / "b"))
    assert (first["state"], again["state"]) == ("done", "done")
    assert (first["result"]["cached"], again["result"]["cached"]) == (False, False)
    np.testing.assert_allclose(
        read_span(tmp_path / "b" / "vocals.wav").samples, separated, atol=1e-6
    )


# -- the network -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, local",
    [
        ("tcp://127.0.0.1:5797", True),
        ("tcp://127.0.0.2:5797", True),
        ("tcp://localhost:5797", True),
        ("tcp://[::1]:5797", True),
        ("ipc:///tmp/daw-bridge", True),
        ("tcp://0.0.0.0:5797", False),
        ("tcp://*:5797", False),
        ("tcp://[::]:5797", False),
        ("tcp://192.168.1.5:5797", False),
        ("tcp://eth0:5797", False),
        ("tcp://studio.example.com:5797", False),
        ("ws://127.0.0.1:5797", False),
    ],
)
def test_only_loopback_tcp_and_local_transports_count_as_local(address, local):
    assert is_local(address) is local


def test_a_network_address_is_refused_until_a_remote_key_is_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv(keys.CONFIG_DIR_ENV, str(tmp_path / "config"))
    monkeypatch.setenv("DAW_BRIDGE_STATE_DIR", str(tmp_path / "state"))
    port = free_port()
    command = [sys.executable, "-m", "daw_bridge", "serve", "--bind", f"tcp://0.0.0.0:{port}"]
    command += ["--model", "dsp", "--device", "cpu"]
    try:
        refused = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the server listened on 0.0.0.0 with no remote key allowed")
    assert refused.returncode == 2
    assert f"Refusing to listen on tcp://0.0.0.0:{port}" in refused.stderr
    assert "daw-bridge keys allow" in refused.stderr
    keys.allow(zmq.curve_keypair()[0].decode(), "laptop")
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output)
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as mine:
            assert mine.hello()["protocol"] == 1
            mine.shutdown()
        process.wait(30)
    finally:
        process.kill()
    assert "reachable from other machines" in log.read_text()  # and it says so


# -- another user of the same machine ----------------------------------------------------


def as_user(name: str, attack: Callable[[], dict]) -> dict:
    """Run ``attack`` in a forked child that became the OS user ``name``; its JSON result."""
    user = pwd.getpwnam(name)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the interpreter is already loaded: it need not be readable by ``name``
        outcome: dict = {"error": "the attack did not run"}
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            outcome = attack()
        except BaseException as error:  # report it to the parent, never run its tests
            outcome = {"error": repr(error)}
        finally:
            os.write(write, json.dumps(outcome).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(child, 0)
    return json.loads(data)


@pytest.mark.skipif(
    not hasattr(os, "fork") or os.geteuid() != 0,
    reason="becoming a second OS user (nobody) needs root; the second-key tests cover the rest",
)
def test_another_os_user_gets_nothing_from_the_server_or_its_files(server, owner, base, tmp_path):
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this machine")
    home = base / "nobody-home"
    home.mkdir()
    os.chown(home, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
    server_key = keys.server_pair().public  # public keys are no secret

    def attack() -> dict:
        os.environ["HOME"] = str(home)
        os.environ[keys.CONFIG_DIR_ENV] = str(home / "config")
        keys.trust(server.address, server_key)
        results = {}

        def attempt(name: str, action: Callable[[], object]) -> None:
            try:
                results[name] = f"got {str(action())[:200]}"
            except (DawBridgeError, OSError) as error:
                results[name] = f"refused: {type(error).__name__}"

        with Client(server.address, timeout=3) as client:
            attempt("status", client.status)
            attempt("cancel", lambda: client.cancel(job))
            attempt("shutdown", client.shutdown)
        attempt("job record", lambda: record.read_text())
        attempt("owner's key", lambda: (owner / "keys" / "client.key").read_text())
        attempt("server's key", lambda: (owner / "keys" / "server.key").read_text())
        return results

    long = write_wav(tmp_path / "long.wav", noise(seconds=30.0, seed=47))
    with Client(server.address, timeout=20) as mine:
        job = mine.submit(long, tmp_path / "victim")
        record = server.state / "jobs" / f"{job}.json"
        try:
            until(mine, job, ("running",))
            outcome = as_user("nobody", attack)
            assert outcome == {
                "status": "refused: AccessRefusedError",
                "cancel": "refused: AccessRefusedError",
                "shutdown": "refused: AccessRefusedError",
                "job record": "refused: PermissionError",
                "owner's key": "refused: PermissionError",
                "server's key": "refused: PermissionError",
            }
            for there in (record, owner / "keys" / "client.key", owner / "keys" / "server.key"):
                assert there.is_file()  # refused, not missing
            assert server.process.poll() is None
            assert mine.result(job)["state"] == "running"  # not cancelled
        finally:
            with contextlib.suppress(DawBridgeError):
                mine.cancel(job)
