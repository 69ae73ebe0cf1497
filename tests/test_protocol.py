"""The wire protocol: what a valid request is, and how invalid ones are named."""

from __future__ import annotations

import pytest

from daw_bridge.protocol import PROTOCOL_VERSION, ProtocolError, decode, encode, validate_request


def request(**fields):
    return decode(encode(fields))


def test_round_trip_carries_the_version():
    message = request(type="hello")
    assert message == {"v": PROTOCOL_VERSION, "type": "hello"}
    assert validate_request(message) is message


def test_submit_with_a_path_span_and_options_is_valid():
    validate_request(
        request(
            type="submit",
            source={"path": "/a.wav", "start": 1.5, "duration": None},
            out_dir="/out",
            options={"model": "htdemucs", "two_stems": "vocals", "shifts": 1, "overwrite": False},
        )
    )


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"type": "dance"}, "unknown message type"),
        ({"type": "cancel"}, "needs the field 'job'"),
        ({"type": "cancel", "job": 5}, "wrong type"),
        ({"type": "submit", "source": {"path": "a", "data": "b"}, "out_dir": "o"}, "either"),
        ({"type": "submit", "source": {"path": "a", "start": "0"}, "out_dir": "o"}, "'start'"),
        (
            {"type": "submit", "source": {"path": "a"}, "out_dir": "o", "options": {"x": 1}},
            "unknown options",
        ),
        (
            {
                "type": "submit",
                "source": {"path": "a"},
                "out_dir": "o",
                "options": {"shifts": True},
            },
            "'shifts'",
        ),
    ],
)
def test_invalid_requests_are_named(message, problem):
    with pytest.raises(ProtocolError, match=problem):
        validate_request(request(**message))


def test_other_protocol_versions_are_refused_with_the_fix():
    with pytest.raises(ProtocolError, match="update daw-bridge"):
        validate_request({"type": "hello", "v": PROTOCOL_VERSION + 1})


@pytest.mark.parametrize("frame", [b"\xff\xfe", b"not json", b"[]", b'{"type": 3}'])
def test_undecodable_frames(frame):
    with pytest.raises(ProtocolError):
        decode(frame)


def test_midi_option_is_a_list_of_names():
    ok = {"type": "submit", "source": {"path": "a"}, "out_dir": "o", "options": {"midi": ["drums"]}}
    validate_request(request(**ok))
    ok["options"] = {"midi": [1]}
    with pytest.raises(ProtocolError, match="midi"):
        validate_request(request(**ok))


def test_apply_names_a_job_and_a_preset_with_an_optional_tail():
    validate_request(request(type="apply", job="abc", preset="karaoke"))
    validate_request(request(type="apply", job="abc", preset="/p/mine.toml", tail="extend"))
    ok = {"type": "submit", "source": {"path": "a"}, "out_dir": "o"}
    validate_request(request(**ok, options={"preset": "karaoke", "tail": "cut"}))
    with pytest.raises(ProtocolError, match="needs the field 'preset'"):
        validate_request(request(type="apply", job="abc"))
    with pytest.raises(ProtocolError, match="wrong type"):
        validate_request(request(type="apply", job="abc", preset="k", tail=1))
    with pytest.raises(ProtocolError, match="wrong type"):
        validate_request(request(**ok, options={"preset": ["karaoke"]}))
