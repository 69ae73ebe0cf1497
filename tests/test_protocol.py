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
        ({"type": "submit", "source": {"path": "a", "upload": "b"}, "out_dir": "/o"}, "either"),
        ({"type": "submit", "source": {"path": "a", "start": "0"}, "out_dir": "/o"}, "'start'"),
        (
            {"type": "submit", "source": {"path": "a"}, "out_dir": "/o", "options": {"x": 1}},
            "unknown options",
        ),
        (
            {
                "type": "submit",
                "source": {"path": "a"},
                "out_dir": "/o",
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
    ok = {"type": "submit", "source": {"path": "a"}, "out_dir": "/o"}
    ok["options"] = {"midi": ["drums"]}
    validate_request(request(**ok))
    ok["options"] = {"midi": [1]}
    with pytest.raises(ProtocolError, match="midi"):
        validate_request(request(**ok))


def test_apply_names_a_job_and_a_preset_with_an_optional_tail():
    validate_request(request(type="apply", job="abc", preset="karaoke"))
    validate_request(request(type="apply", job="abc", preset="/p/mine.toml", tail="extend"))
    ok = {"type": "submit", "source": {"path": "a"}, "out_dir": "/o"}
    validate_request(request(**ok, options={"preset": "karaoke", "tail": "cut"}))
    with pytest.raises(ProtocolError, match="needs the field 'preset'"):
        validate_request(request(type="apply", job="abc"))
    with pytest.raises(ProtocolError, match="wrong type"):
        validate_request(request(type="apply", job="abc", preset="k", tail=1))
    with pytest.raises(ProtocolError, match="wrong type"):
        validate_request(request(**ok, options={"preset": ["karaoke"]}))


# --------------------------------------------------------------------------- what users send
# Each of these reached the server's "Internal error ... Report it." before (issue 14, point 7):
# a user's mistake is named as such, in a reply of bounded size.

SUBMIT = {"type": "submit", "source": {"path": "/a.wav"}, "out_dir": "/out"}


def submit(source=None, out_dir="/out", **options):
    return {**SUBMIT, "source": {"path": "/a.wav", **(source or {})}, "out_dir": out_dir,
            "options": options}  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b'{"type":"submit","source":{"path":"/a","start":NaN},"out_dir":"/o"}', "NaN"),
        (b'{"type":"submit","source":{"path":"/a","start":Infinity},"out_dir":"/o"}', "Infinity"),
        (b'{"type":"submit","source":{"path":"/a","duration":-Infinity},"out_dir":"/o"}', "Inf"),
        (b'{"type":"hello","v":' + b"9" * 5000 + b"}", "5000 digits"),
        (b'{"type":"hello","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    ],
)
def test_frames_python_would_choke_on_are_refused_by_name(frame, problem):
    with pytest.raises(ProtocolError, match=problem):
        decode(frame)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (submit({"start": 1e300}), "'start' must be 0 to 10,000,000 seconds"),
        (submit({"start": -1}), "'start' must be 0"),
        (submit({"duration": 0}), "'duration' must be more than 0"),
        (submit({"duration": 1e12}), "'duration' must be more than 0 to 10,000,000"),
        (submit({"path": "/music/a\x00.wav"}), "'path' contains a NUL"),
        (submit({"path": "/music/\ud800.wav"}), "'path' is not valid Unicode"),
        (submit(out_dir="/stems/" + "n" * 300), "'out_dir' holds a name of 300 bytes"),
        (submit({"path": "/" + "é" * 200}), "name of 400 bytes"),
        (submit(model="x" * 50_000_000), "'model' is 50,000,000 characters long"),
        (submit(preset="p" * 5000), "'preset' is 5,000 characters long"),
        (submit(shifts=10**9), "'shifts' must be 0 to 20"),
        (submit(midi=["drums"] * 9), "at most 8"),
        ({"type": "cancel", "job": "j" * 10_000}, "'job' is 10,000 characters"),
        ({"type": "x" * 1_000_000}, "unknown message type 'xxxx"),
        ({**SUBMIT, "options": {"y" * 1_000_000: 1}}, "unknown options"),
    ],
)
def test_user_mistakes_are_named_in_a_short_message(message, problem):
    with pytest.raises(ProtocolError, match=problem) as error:
        validate_request({"v": PROTOCOL_VERSION, **message})
    assert len(str(error.value)) < 500


@pytest.mark.parametrize("version", [True, 1.0, "1", [1], None])
def test_only_the_integer_1_is_protocol_version_1(version):
    with pytest.raises(ProtocolError, match="update daw-bridge"):
        validate_request({"type": "hello", "v": version})


def test_ordinary_values_at_the_limits_are_accepted():
    validate_request(request(**submit({"start": 0, "duration": 1e7}, shifts=20, midi=["drums"])))
    validate_request(request(**submit({"path": "/Música/Ünïcødé song (final).wav"})))
    validate_request(request(**submit(out_dir="/Users/me/" + "n" * 255)))


def test_a_relative_output_folder_is_refused():
    with pytest.raises(ProtocolError, match="'out_dir' must be an absolute path"):
        validate_request(request(**submit(out_dir="stems/here")))
