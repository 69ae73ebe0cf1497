"""The resident server, tested as a real process on 127.0.0.1 with a tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daw_bridge.audio.io import read_span
from daw_bridge.client.client import Client, ServerUnavailableError, connect
from daw_bridge.errors import DawBridgeError
from daw_bridge.protocol import FINAL_STATES, encode
from daw_bridge.server.jobs import Job
from daw_bridge.server.server import Server
from tests.conftest import ServerProcess, as_owner, free_address, noise, write_wav
from tests.output_folders import UNUSABLE, read_only, unusable_folder

#: The longest any job here may take; a stuck one fails its test instead of hanging the suite.
JOB_DEADLINE_S = 120.0


class DeadlineClient(Client):
    """A client whose ``wait`` gives up after :data:`JOB_DEADLINE_S`.

    ``Client.wait`` follows a job as long as the server sends heartbeats, so a
    job stuck in the worker would keep a test waiting for ever.
    """

    def wait(self, job: str, on_event=None) -> dict:
        deadline = time.monotonic() + JOB_DEADLINE_S

        def within_the_deadline(event: dict) -> None:
            if on_event is not None:
                on_event(event)
            if event["state"] not in FINAL_STATES and time.monotonic() > deadline:
                raise AssertionError(f"job {job} still {event['state']} after {JOB_DEADLINE_S} s")

        return super().wait(job, within_the_deadline)


def raw_exchange(address: str, frames: list[bytes], wait_ms: int = 5000) -> dict | None:
    """Send ``frames`` from a bare DEALER socket with the owner's keys; the decoded reply,
    or None if none came."""
    with as_owner(zmq.Context.instance().socket(zmq.DEALER)) as raw:
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(address)
        raw.send_multipart(frames)
        return json.loads(raw.recv()) if raw.poll(wait_ms) else None


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-state")


@pytest.fixture(scope="module")
def server(tiny_checkpoint, state):
    process = ServerProcess(tiny_checkpoint, state, "--max-message-mb", "1")
    yield process
    process.kill()


@pytest.fixture
def client(server):
    with DeadlineClient(server.address, timeout=20) as c:
        yield c


@pytest.fixture
def song(tmp_path) -> Path:
    return write_wav(tmp_path / "song.wav", noise(seconds=3.0, seed=int(time.time_ns() % 1000)))


def test_hello_status_and_models(client, tiny_checkpoint):
    assert client.hello()["protocol"] == 1
    status = client.status()
    assert status["model"] == str(tiny_checkpoint) and status["device"] == "cpu"
    assert status["backend"] == "openvino"  # the CPU default
    assert status["loaded"] == [str(tiny_checkpoint)]  # warm from the start
    models = client.models()
    assert "htdemucs" in models["models"] and "vocals-max" in models["ensembles"]


def test_serve_backend_option_reaches_every_model_it_loads(tiny_checkpoint, tmp_path):
    process = ServerProcess(tiny_checkpoint, tmp_path, "--backend", "torch")
    try:
        with DeadlineClient(process.address, timeout=20) as client:
            assert client.status()["backend"] == "torch"
    finally:
        process.kill()


def test_submit_streams_progress_and_writes_stems_that_sum_to_the_span(client, song, tmp_path):
    job = client.submit(song, tmp_path / "stems", start=0.5, duration=2.0)
    events: list[dict] = []
    final = client.wait(job, events.append)
    assert final["state"] == "done", final
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    stems = {name: read_span(path).samples for name, path in final["result"]["stems"].items()}
    assert set(stems) == {"drums", "bass", "other", "vocals"}
    np.testing.assert_allclose(sum(stems.values()), read_span(song, 0.5, 2.0).samples, atol=1e-6)
    assert client.result(job)["state"] == "done"  # fetchable again by id


def test_long_spans_are_separated_from_the_file_in_blocks_with_the_same_stems(
    client, tiny_checkpoint, song, tmp_path
):
    """Above DAW_BRIDGE_STREAM_SECONDS the worker streams; stems and cache keys agree."""
    streaming = ServerProcess(
        tiny_checkpoint, tmp_path / "state", env={"DAW_BRIDGE_STREAM_SECONDS": "1"}
    )
    try:
        with DeadlineClient(streaming.address, timeout=30) as other:
            first = other.wait(other.submit(song, tmp_path / "a", start=0.5, duration=2.0))
            again = other.wait(other.submit(song, tmp_path / "b", start=0.5, duration=2.0))
    finally:
        streaming.kill()
    whole = client.wait(client.submit(song, tmp_path / "c", start=0.5, duration=2.0))
    assert (first["state"], first["result"]["cached"], again["result"]["cached"]) == (
        "done",
        False,
        True,  # the streamed span hash is the span's content hash
    )
    for name, path in whole["result"]["stems"].items():
        expected = read_span(path).samples
        np.testing.assert_allclose(
            read_span(first["result"]["stems"][name]).samples, expected, atol=1e-5
        )
    manifests = [json.loads(Path(r["result"]["manifest"]).read_text()) for r in (first, whole)]
    assert manifests[0]["input"]["span_sha256"] == manifests[1]["input"]["span_sha256"]


def test_same_audio_again_is_a_cache_hit_under_100_ms(client, song, tmp_path):
    first = client.wait(client.submit(song, tmp_path / "a"))
    started = time.perf_counter()
    second = client.wait(client.submit(song, tmp_path / "b"))
    elapsed = time.perf_counter() - started
    assert first["result"]["cached"] is False and second["result"]["cached"] is True
    assert second["result"]["seconds"] < 0.1, second["result"]
    assert elapsed < 0.5
    for name in ("drums", "vocals"):
        a = read_span(tmp_path / "a" / f"{name}.wav").samples
        np.testing.assert_array_equal(a, read_span(tmp_path / "b" / f"{name}.wav").samples)


def test_several_clients_at_once(server, tmp_path):
    results: dict[int, dict] = {}

    def run(i: int) -> None:
        path = write_wav(tmp_path / f"c{i}.wav", noise(seconds=1.5, seed=100 + i))
        with DeadlineClient(server.address, timeout=30) as own:
            results[i] = own.wait(own.submit(path, tmp_path / f"out{i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [results[i]["state"] for i in range(3)] == ["done"] * 3


def test_cancel_stops_the_job_and_writes_nothing(client, tmp_path):
    long = write_wav(tmp_path / "long.wav", noise(seconds=40.0, seed=7))
    job = client.submit(long, tmp_path / "never")
    time.sleep(0.5)
    started = time.perf_counter()
    client.cancel(job)
    final = client.wait(job)
    assert final["state"] == "cancelled"
    assert time.perf_counter() - started < 3.0
    assert not (tmp_path / "never").exists()
    assert client.hello()["protocol"] == 1


def test_bad_input_fails_the_job_clearly_and_the_server_keeps_serving(client, tmp_path):
    final = client.wait(client.submit(tmp_path / "missing.wav", tmp_path / "out"))
    assert final["state"] == "failed" and "not found" in final["error"]["problem"]
    six = write_wav(tmp_path / "six.wav", noise(6, 0.2))
    final = client.wait(client.submit(six, tmp_path / "out"))
    assert "6 channels" in final["error"]["problem"] and final["error"]["fix"]
    assert client.hello()["protocol"] == 1


class _RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append(json.loads(frames[1]))


def test_a_job_that_ends_while_its_progress_is_published_still_sends_its_final_event(
    monkeypatch,
):
    """The worker thread may finish a job while the loop publishes its previous change."""
    server = Server.__new__(Server)  # only the event plumbing, no model or socket
    job = Job(id="j1", client=b"c", request={}, state="running")
    server.watchers = {job.id: {b"c"}}
    snapshot = Job.public

    def public_then_the_worker_finishes(self: Job) -> dict:
        public = snapshot(self)
        self.state = "failed"
        return public

    monkeypatch.setattr(Job, "public", public_then_the_worker_finishes)
    socket = _RecordingSocket()
    server._publish(socket, job)  # the "running" notification
    server._publish(socket, job)  # the "failed" notification
    assert [(e["type"], e["state"]) for e in socket.sent] == [
        ("progress", "running"),
        ("job", "failed"),
    ]
    assert job.id not in server.watchers


def test_missing_weights_fail_the_job_with_the_core_message(client, song, tmp_path, monkeypatch):
    final = client.wait(client.submit(song, tmp_path / "out", model="htdemucs_6s"))
    assert final["state"] == "failed"
    assert "5c90dfd2-34c22ccb.th" in final["error"]["problem"] + final["error"]["fix"]
    assert client.hello()["protocol"] == 1


@pytest.mark.parametrize(
    "frames",
    [
        [b"not json"],
        [b"[1, 2]"],
        [encode({"type": "explode"})],
        [b'{"type": "hello", "v": 99}'],
        [encode({"type": "submit", "source": {"path": 3}, "out_dir": "x"})],
        [encode({"type": "submit", "source": {}, "out_dir": "x"})],
        [
            encode(
                {"type": "submit", "source": {"path": "a"}, "out_dir": "x", "options": {"evil": 1}}
            )
        ],
        [encode({"type": "cancel", "job": "nope"})],
        [encode({"type": "apply", "job": "0123456789abcdef"})],
        [encode({"type": "apply", "job": "0123456789abcdef", "preset": "karaoke"})],
        [encode({"type": "apply", "job": "x", "preset": "karaoke", "tail": 3})],
        [b"a", b"b"],
    ],
)
def test_malformed_messages_get_an_error_reply(server, frames):
    reply = raw_exchange(server.address, frames)
    assert reply is not None, "no reply"
    assert reply["type"] == "error" and reply["problem"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=8), children, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_fuzzed_messages_never_crash_the_server(server, payload):
    reply = raw_exchange(server.address, [payload])
    assert reply is not None, "no reply"
    assert reply["type"] in {"error", "hello", "status", "models", "ok"}
    assert server.process.poll() is None


def test_oversized_message_is_dropped_and_the_server_keeps_serving(server, client):
    assert raw_exchange(server.address, [b"x" * (2 * 2**20)], wait_ms=500) is None
    assert client.hello()["protocol"] == 1 and server.process.poll() is None


def test_client_killed_mid_job_the_job_finishes_and_its_result_can_be_fetched(server, tmp_path):
    path = write_wav(tmp_path / "k.wav", noise(seconds=6.0, seed=11))
    submit = f"c.submit({str(path)!r}, {str(tmp_path / 'k')!r})"
    script = (
        "import sys, time; from daw_bridge.client.client import Client; "
        f"c = Client({server.address!r}); print({submit}, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    job = child.stdout.readline().strip()
    child.kill()
    child.wait()
    with DeadlineClient(server.address, timeout=30) as later:
        final = later.wait(job)
    assert final["state"] == "done" and (tmp_path / "k" / "vocals.wav").is_file()


def test_dead_server_is_noticed_by_a_waiting_client(tiny_checkpoint, tmp_path):
    process = ServerProcess(tiny_checkpoint, tmp_path / "state")
    try:
        path = write_wav(tmp_path / "d.wav", noise(seconds=30.0, seed=3))
        with DeadlineClient(process.address, timeout=2) as c:
            job = c.submit(path, tmp_path / "d")
            process.process.send_signal(signal.SIGSTOP)
            with pytest.raises(ServerUnavailableError, match="No daw-bridge server answered"):
                c.wait(job)
        process.process.send_signal(signal.SIGCONT)
    finally:
        process.kill()


def test_server_killed_mid_job_leaves_no_partial_files_and_serves_after_restart(
    tiny_checkpoint, tmp_path
):
    state = tmp_path / "state"
    process = ServerProcess(tiny_checkpoint, state)
    path = write_wav(tmp_path / "long.wav", noise(seconds=30.0, seed=5))
    with DeadlineClient(process.address, timeout=20) as c:
        job = c.submit(path, tmp_path / "out")
        deadline = time.monotonic() + JOB_DEADLINE_S
        while c.result(job)["progress"] < 0.1:
            assert time.monotonic() < deadline, "the job never got to 10 %"
            time.sleep(0.1)
    process.kill()
    visible = (
        [p for p in (tmp_path / "out").rglob("*") if not p.name.startswith(".")]
        if (tmp_path / "out").exists()
        else []
    )
    assert visible == []
    again = ServerProcess(tiny_checkpoint, state)
    try:
        with DeadlineClient(again.address, timeout=20) as c:
            lost = c.result(job)
            assert lost["state"] == "failed" and "stopped" in lost["error"]["problem"]
            small = write_wav(tmp_path / "small.wav", noise(seconds=1.0))
            assert c.wait(c.submit(small, tmp_path / "fine"))["state"] == "done"
        stems = state / "server" / "stems"  # ServerProcess's DAW_BRIDGE_STATE_DIR/server
        assert stems.is_dir() and not list(stems.glob(".staging-*"))
    finally:
        again.kill()


def test_autostart_launches_a_server_when_none_answers(tiny_checkpoint, tmp_path, monkeypatch):
    address = free_address()
    monkeypatch.setenv("DAW_BRIDGE_STATE_DIR", str(tmp_path / "state"))
    client = connect(
        address,
        timeout=5,
        autostart=True,
        log_file=tmp_path / "server.log",
        server_args=["--model", str(tiny_checkpoint), "--device", "cpu"],
    )
    try:
        assert client.hello()["protocol"] == 1
    finally:
        client.shutdown()
        client.close()
    assert "ready" in (tmp_path / "server.log").read_text()


def test_no_server_is_a_clear_error():
    with pytest.raises(ServerUnavailableError) as error:
        connect(free_address(), timeout=0.3)
    assert "daw-bridge serve" in error.value.fix


def test_unknown_job_is_an_error(client):
    with pytest.raises(DawBridgeError, match="No job"):
        client.result("0123456789abcdef")


def test_audio_bytes_can_be_sent_instead_of_a_path(client, tmp_path):
    path = write_wav(tmp_path / "bytes.wav", noise(seconds=1.0, seed=21))
    job = client.submit_audio(path.read_bytes(), "bytes.wav", tmp_path / "from-bytes")
    final = client.wait(job)
    assert final["state"] == "done"
    stems = [read_span(p).samples for p in final["result"]["stems"].values()]
    np.testing.assert_allclose(sum(stems), read_span(path).samples, atol=1e-6)


def test_existing_stems_in_the_output_folder_are_not_overwritten(client, song, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "vocals.wav").write_bytes(b"mine")
    final = client.wait(client.submit(song, tmp_path / "taken"))
    assert final["state"] == "failed" and "--overwrite" in final["error"]["fix"]
    assert (tmp_path / "taken" / "vocals.wav").read_bytes() == b"mine"
    assert client.wait(client.submit(song, tmp_path / "taken", overwrite=True))["state"] == "done"


def test_a_changed_file_is_separated_again_not_served_from_the_cache(client, tmp_path):
    path = write_wav(tmp_path / "edit.wav", noise(seconds=1.0, seed=31))
    assert client.wait(client.submit(path, tmp_path / "v1"))["result"]["cached"] is False
    write_wav(path, noise(seconds=1.0, seed=32))  # the user re-renders the clip in place
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1000))
    assert client.wait(client.submit(path, tmp_path / "v2"))["result"]["cached"] is False


def test_other_models_load_on_demand_next_to_the_warm_one(client, song, tmp_path, tiny_checkpoint):
    final = client.wait(client.submit(song, tmp_path / "dsp", model="dsp"))
    assert final["state"] == "done"
    assert set(client.status()["loaded"]) == {str(tiny_checkpoint), "dsp"}


def test_a_job_can_also_write_midi_for_its_stems(client, tmp_path):
    from daw_bridge.demo import synthetic_song
    from daw_bridge.midi.notes import read_notes

    song = write_wav(tmp_path / "synth.wav", synthetic_song(seconds=3.0, seed=4)[0])
    final = client.wait(client.submit(song, tmp_path / "m", model="dsp", midi=["drums", "bass"]))
    assert final["state"] == "done", final
    assert set(final["result"]["midi"]) == {"drums", "bass"}
    assert read_notes(Path(final["result"]["midi"]["drums"]))
    failed = client.wait(client.submit(song, tmp_path / "g", model="dsp", midi=["guitar"]))
    assert failed["state"] == "failed" and "guitar" in failed["error"]["problem"]
    assert not (tmp_path / "g").exists()  # refused before separating anything


def test_a_job_with_a_preset_writes_processed_stems_beside_the_raw_ones(client, song, tmp_path):
    final = client.wait(client.submit(song, tmp_path / "p", preset="instrumental"))
    assert final["state"] == "done", final
    result = final["result"]
    assert result["preset"] == "instrumental"
    assert set(result["processed"]) == set(result["stems"]) == {"drums", "bass", "other", "vocals"}
    assert {Path(p).parent for p in result["processed"].values()} == {
        tmp_path / "p" / "instrumental"
    }
    assert not read_span(result["processed"]["vocals"]).samples.any()
    raw_drums = read_span(result["stems"]["drums"]).samples
    np.testing.assert_array_equal(read_span(result["processed"]["drums"]).samples, raw_drums)


def test_another_preset_is_re_applied_to_a_finished_job_without_separating_again(
    client, song, tmp_path
):
    first = client.wait(client.submit(song, tmp_path / "r", preset="karaoke"))
    raw = {name: Path(path).read_bytes() for name, path in first["result"]["stems"].items()}
    started = time.perf_counter()
    final = client.wait(client.apply(first["job"], "acapella"))
    assert time.perf_counter() - started < 2.0
    assert final["state"] == "done", final
    result = final["result"]
    assert result["source_job"] == first["job"] and result["preset"] == "acapella"
    assert result["stems"] == first["result"]["stems"] and result["folder"] == str(tmp_path / "r")
    assert {Path(p).parent for p in result["processed"].values()} == {tmp_path / "r" / "acapella"}
    assert not read_span(result["processed"]["drums"]).samples.any()
    assert read_span(result["processed"]["vocals"]).samples.any()
    assert {name: Path(p).read_bytes() for name, p in result["stems"].items()} == raw
    assert (tmp_path / "r" / "karaoke" / "vocals.wav").is_file()  # the first preset's stay
    # An apply job can itself be re-applied: always from the raw stems.
    again = client.wait(client.apply(final["job"], "instrumental", tail="extend"))
    assert again["state"] == "done" and again["result"]["stems"] == first["result"]["stems"]


def test_re_apply_errors_are_clear_and_the_server_keeps_serving(client, song, tmp_path):
    with pytest.raises(DawBridgeError, match="No job"):
        client.apply("0123456789abcdef", "karaoke")
    done = client.wait(client.submit(song, tmp_path / "e"))
    failed = client.wait(client.apply(done["job"], "no-such-preset"))
    assert failed["state"] == "failed" and "no-such-preset" in failed["error"]["problem"]
    assert "karaoke" in failed["error"]["fix"]
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[stems.vocals]\ngain_db = 100\n')
    failed = client.wait(client.apply(done["job"], str(bad)))
    assert (
        str(bad) in failed["error"]["problem"]
        and "stems.vocals.gain_db" in failed["error"]["problem"]
    )
    failed = client.wait(client.apply(done["job"], "karaoke", tail="forever"))
    assert "tail" in failed["error"]["problem"] and "extend" in failed["error"]["fix"]
    long = write_wav(tmp_path / "busy.wav", noise(seconds=20.0, seed=9))
    busy = client.submit(long, tmp_path / "busy")
    try:
        with pytest.raises(DawBridgeError, match="only a finished job"):
            client.apply(busy, "karaoke")
    finally:
        client.cancel(busy)
    assert client.hello()["protocol"] == 1


def test_an_unknown_preset_fails_a_split_before_separating(client, song, tmp_path):
    final = client.wait(client.submit(song, tmp_path / "never", preset="nope"))
    assert final["state"] == "failed" and "no preset named 'nope'" in final["error"]["problem"]
    assert not (tmp_path / "never").exists()


def job_records(state: Path) -> set[str]:
    return {path.name for path in (state / "jobs").glob("*.json")}


@pytest.mark.parametrize("case", UNUSABLE)
def test_an_unusable_output_folder_is_refused_at_submit_and_the_server_keeps_serving(
    client, song, state, tmp_path, case
):
    jobs_before = job_records(state)
    with (
        unusable_folder(case, tmp_path) as (bad, says),
        pytest.raises(DawBridgeError) as refused,
    ):
        client.submit(song, bad)
    assert str(bad) in refused.value.problem and says in refused.value.problem
    assert "Choose an output folder you can write to" in refused.value.fix
    assert job_records(state) == jobs_before  # no job was created, so nothing was separated
    assert client.wait(client.submit(song, tmp_path / "fine"))["state"] == "done"


def test_a_preset_is_not_re_applied_into_a_folder_that_became_read_only(client, song, tmp_path):
    done = client.wait(client.submit(song, tmp_path / "stems"))
    with (
        read_only(tmp_path / "stems"),
        pytest.raises(DawBridgeError, match="Cannot write into the output folder") as refused,
    ):
        client.apply(done["job"], "karaoke")
    assert str(tmp_path / "stems") in refused.value.problem
    assert client.wait(client.apply(done["job"], "karaoke"))["state"] == "done"


def test_a_job_keeping_one_stem_gets_it_and_rest_and_the_cache_keeps_all(client, song, tmp_path):
    kept = client.wait(client.submit(song, tmp_path / "kept", keep=["vocals"]))
    assert kept["state"] == "done", kept
    assert set(kept["result"]["stems"]) == {"vocals", "rest"}
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [
        "manifest.json",
        "rest.wav",
        "vocals.wav",
    ]
    stems = [soundfile.read(path, dtype="float32")[0] for path in kept["result"]["stems"].values()]
    np.testing.assert_allclose(sum(stems), soundfile.read(song, dtype="float32")[0], atol=1e-5)
    every = client.wait(client.submit(song, tmp_path / "every"))  # the same clip, all stems
    assert every["result"]["cached"] and set(every["result"]["stems"]) == {
        "drums",
        "bass",
        "other",
        "vocals",
    }
    np.testing.assert_array_equal(
        soundfile.read(tmp_path / "every" / "vocals.wav")[0],
        soundfile.read(tmp_path / "kept" / "vocals.wav")[0],
    )


def test_a_job_keeping_a_stem_the_model_lacks_fails_with_the_models_stems(client, song, tmp_path):
    final = client.wait(client.submit(song, tmp_path / "k", keep=["kazoo"]))
    assert final["state"] == "failed"
    assert "'kazoo' is not a stem" in final["error"]["problem"]
    assert not (tmp_path / "k").exists()


def test_a_job_with_a_drum_kit_delivers_the_drum_pieces_with_the_stems(client, song, tmp_path):
    final = client.wait(client.submit(song, tmp_path / "kit", drum_kit="dsp"))
    assert final["state"] == "done", final
    pieces = final["result"]["drum_kit"]
    assert set(pieces) == {"drums", "bass", "other", "vocals", "rest"}  # dsp's four, and rest
    assert all(Path(path).parent == tmp_path / "kit" / "drums" for path in pieces.values())
    drums = soundfile.read(tmp_path / "kit" / "drums.wav", dtype="float64")[0]
    total = sum(soundfile.read(path, dtype="float64")[0] for path in pieces.values())
    np.testing.assert_allclose(total, drums, atol=1e-6)
