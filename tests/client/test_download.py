"""A download writes only inside its own folder, and the protocol bounds remote requests."""

from __future__ import annotations

import pytest

from daw_bridge.client.client import Client, _localised
from daw_bridge.errors import DawBridgeError
from daw_bridge.protocol import ProtocolError, decode, encode, validate_request
from tests.conftest import free_address

GOOD = {"path": "vocals.wav", "size": 4, "sha256": "0" * 64}


@pytest.mark.parametrize(
    "entry",
    [
        {**GOOD, "path": "../outside.wav"},
        {**GOOD, "path": "/etc/passwd"},
        {**GOOD, "path": "C:\\Windows\\x.wav"},
        {**GOOD, "path": "drums/..\\..\\x.wav"},
        {**GOOD, "path": ""},
        {**GOOD, "size": -1},
        {**GOOD, "size": "4"},
        {**GOOD, "sha256": None},
        "vocals.wav",
    ],
)
def test_a_listed_file_outside_the_folder_or_without_facts_is_refused_before_any_write(
    tmp_path, entry
):
    final = {"job": "0123456789abcdef", "state": "done", "result": {"files": [GOOD, entry]}}
    with (
        Client(free_address(), timeout=1) as client,  # nothing is asked of a server
        pytest.raises(DawBridgeError, match="cannot be downloaded safely"),
    ):
        client.download(final, tmp_path / "stems")
    assert not (tmp_path / "stems").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_job_without_files_is_not_downloaded(tmp_path):
    final = {"job": "j", "state": "done", "result": {"stems": {"vocals": "/srv/v.wav"}}}
    with (
        Client(free_address(), timeout=1) as client,
        pytest.raises(DawBridgeError, match="no files to download"),
    ):
        client.download(final, tmp_path / "stems")


def test_a_remote_result_points_into_the_local_folder(tmp_path):
    result = {
        "folder": "",
        "stems": {"vocals": "vocals.wav"},
        "drum_kit": {"kick": "drums/kick.wav"},
        "processed": {"vocals": "karaoke/vocals.wav"},
        "midi": {},
        "cached": True,
    }
    local = _localised(result, tmp_path)
    assert local["stems"] == {"vocals": str(tmp_path / "vocals.wav")}
    assert local["drum_kit"] == {"kick": str(tmp_path / "drums" / "kick.wav")}
    assert local["processed"] == {"vocals": str(tmp_path / "karaoke" / "vocals.wav")}
    assert (local["folder"], local["manifest"]) == (str(tmp_path), str(tmp_path / "manifest.json"))


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"type": "fetch", "job": "j", "path": "a.wav"}, "needs the field 'offset'"),
        ({"type": "fetch", "job": "j", "path": "a.wav", "offset": -1}, "'offset'"),
        ({"type": "fetch", "job": "j", "path": "a.wav", "offset": 0, "size": 0}, "'size'"),
        ({"type": "fetch", "job": "j", "path": "a\x00", "offset": 0}, "NUL"),
        ({"type": "delivered"}, "needs the field 'job'"),
        ({"type": "chunk", "upload": "u", "offset": 0, "data": "", "sha256": 5}, "wrong type"),
        ({"type": "submit", "source": {"upload": "u"}, "out_dir": "relative"}, "absolute"),
    ],
)
def test_remote_requests_with_bad_fields_are_named(message, problem):
    with pytest.raises(ProtocolError, match=problem):
        validate_request(decode(encode(message)))


def test_a_submit_without_an_output_folder_is_a_valid_remote_job():
    message = {"type": "submit", "source": {"upload": "0123456789abcdef"}}
    assert validate_request(decode(encode(message)))["source"]["upload"]
