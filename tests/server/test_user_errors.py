"""A user's mistake gets a user's message, never "Internal error ... Report it." (issue 14, 7).

Well-formed requests (right version, known type) whose values are what a
confused script or a hostile one might send: the server answers each with an
error that names the problem and the fix, or accepts it as a job that then
fails with such an error, and keeps serving.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daw_bridge.client.client import Client
from daw_bridge.errors import DawBridgeError
from daw_bridge.protocol import FINAL_STATES
from tests.conftest import ServerProcess, noise, write_wav


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    process = ServerProcess(tiny_checkpoint, tmp_path_factory.mktemp("user-errors-state"))
    yield process
    process.kill()


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("songs") / "song.wav", noise(seconds=1.0))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outputs")


def ask(address: str, message: dict) -> dict:
    """The server's reply to ``message``, an error reply included."""
    with Client(address, timeout=20) as client:
        try:
            return client.request(message)
        except DawBridgeError as error:
            return {"type": "error", "problem": error.problem, "fix": error.fix}


def assert_a_user_message(reply: dict) -> None:
    assert reply["type"] == "error", reply
    assert "Internal error" not in reply["problem"], reply
    assert reply["fix"] and "Report it" not in reply["fix"], reply
    assert len(reply["problem"]) < 2000  # a 50 MB value is never echoed back


def final_error(address: str, job: str) -> dict | None:
    """The error a job ended with (None if it succeeded), waiting up to 60 s."""
    deadline = time.monotonic() + 60
    with Client(address, timeout=20) as client:
        while time.monotonic() < deadline:
            result = client.result(job)
            if result["state"] in FINAL_STATES:
                return result["error"]
            time.sleep(0.05)
    raise AssertionError(f"job {job} did not finish within 60 s")


@pytest.mark.parametrize(
    ("source", "out_dir", "options"),
    [
        ({"start": 1e300}, None, {}),
        ({"start": 1e6}, None, {}),  # valid number, past the end of the file
        ({"duration": 1e-9}, None, {}),
        ({"path": "/music/a\x00.wav"}, None, {}),
        ({"path": "/music/\udcff.wav"}, None, {}),
        ({"path": "/" + "n" * 300 + ".wav"}, None, {}),
        ({}, "stems/relative", {}),
        ({}, None, {"model": "m" * 10_000_000}),  # under the 16 MiB message cap
        ({}, None, {"model": "no-such-model"}),
        ({}, None, {"format": "mp4"}),
        ({}, None, {"two_stems": "kazoo"}),
        ({}, None, {"preset": "no such preset"}),
        ({}, None, {"midi": ["guitar"]}),
        ({}, None, {"shifts": 10**6}),
        ({"upload": "0123456789abcdef"}, None, {}),  # never announced
        ({"upload": "u" * 10_000}, None, {}),
    ],
)
def test_a_submit_with_a_bad_value_is_refused_or_fails_with_a_user_message(
    server, song, outputs, source, out_dir, options
):
    fields = {"path": str(song), **source}
    if "upload" in fields:
        del fields["path"]
    message = {
        "type": "submit",
        "source": fields,
        "out_dir": out_dir if out_dir is not None else str(outputs / "x"),
        "options": options,
    }

    reply = ask(server.address, message)

    if reply["type"] == "accepted":  # checked by the worker instead: the job fails clearly
        error = final_error(server.address, reply["job"])
        assert error is not None
        reply = {"type": "error", **error}
    assert_a_user_message(reply)
    assert ask(server.address, {"type": "hello"})["type"] == "hello"


@pytest.mark.parametrize(
    "message",
    [
        {"type": "cancel", "job": "\x00"},
        {"type": "result", "job": "../../etc/passwd"},
        {"type": "watch", "job": "j" * 10_000},
        {"type": "apply", "job": "nope", "preset": "karaoke", "tail": "sideways"},
        {"type": "hello", "v": True},
    ],
)
def test_other_requests_with_bad_values_get_user_messages(server, message):
    assert_a_user_message(ask(server.address, message))


texts = st.text(max_size=40) | st.sampled_from(["", "\x00", "\ud800", "é" * 300, "../.."])
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**30), 10**30)
values = st.none() | st.booleans() | numbers | texts | st.lists(texts, max_size=3)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    source=st.dictionaries(st.sampled_from(["path", "start", "duration", "name"]), values),
    options=st.dictionaries(
        st.sampled_from(["model", "two_stems", "format", "shifts", "midi", "preset", "tail"]),
        values,
    ),
    job_field=values,
)
def test_fuzzed_values_in_well_formed_requests_never_reach_an_internal_error(
    server, outputs, source, options, job_field
):
    for message in (
        {"type": "submit", "source": source, "out_dir": str(outputs / "f"), "options": options},
        {"type": "cancel", "job": job_field},
        {"type": "apply", "job": job_field, "preset": "karaoke"},
    ):
        reply = ask(server.address, message)
        if reply["type"] == "accepted":
            error = final_error(server.address, reply["job"])
            if error is None:
                continue  # a valid request after all
            reply = {"type": "error", **error}
        if reply["type"] == "error":
            assert_a_user_message(reply)
    assert ask(server.address, {"type": "hello"})["type"] == "hello"
