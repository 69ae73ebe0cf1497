"""The versioned message protocol shared by server and client.

Messages are single ZeroMQ frames holding a JSON object with a ``type``; the
client's DEALER socket talks to the server's ROUTER socket. Requests carry an
optional ``req`` id that the reply echoes. This module must stay light: the
client imports it and starts in well under 150 ms, so no torch, no numpy.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_ADDRESS = "tcp://127.0.0.1:5797"
#: Larger messages are dropped by ZeroMQ before they reach our code.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: The server sends job events at least this often while a job is active.
HEARTBEAT_SECONDS = 1.0

#: Request type -> required fields with their JSON types.
REQUESTS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "hello": {},
    "status": {},
    "models": {},
    "submit": {"source": dict, "out_dir": str},
    "cancel": {"job": str},
    "result": {"job": str},
    "watch": {"job": str},
    "shutdown": {},
    # Re-apply an effect preset to a finished job's raw stems: a new job, no separation.
    "apply": {"job": str, "preset": str},
}
#: Optional fields of an "apply" request.
APPLY_OPTIONS: dict[str, type | tuple[type, ...]] = {"tail": str}
#: Optional submit options and their types.
SUBMIT_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "two_stems": (str, type(None)),
    "format": str,
    "sum_to_input": bool,
    "shifts": int,
    "overwrite": bool,
    "midi": list,
    "preset": str,  # a preset name or an absolute path to a .toml file
    "tail": str,  # "cut" or "extend": overrides the preset's own
}
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")


class ProtocolError(ValueError):
    """A message that does not follow this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **message}, separators=(",", ":")).encode()


def decode(frame: bytes) -> dict[str, Any]:
    try:
        message = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"not a JSON message: {error}") from error
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a message is a JSON object with a string 'type'")
    return message


def _check_fields(where: str, message: dict, fields: dict, required: bool) -> None:
    for name, kind in fields.items():
        if name not in message:
            if required:
                raise ProtocolError(f"{where} needs the field '{name}'")
            continue
        value = message[name]
        if isinstance(value, bool) and kind in (int, float):
            raise ProtocolError(f"'{name}' must be {kind.__name__}")
        if not isinstance(value, kind):
            raise ProtocolError(f"'{name}' has the wrong type ({type(value).__name__})")


def validate_request(message: dict[str, Any]) -> dict[str, Any]:
    """Check a request's type, version and fields; return it unchanged."""
    kind = message["type"]
    if kind not in REQUESTS:
        raise ProtocolError(f"unknown message type '{kind}'; known: {', '.join(REQUESTS)}")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {message.get('v')!r} is not {PROTOCOL_VERSION}: "
            "update daw-bridge so client and server match"
        )
    _check_fields(kind, message, REQUESTS[kind], required=True)
    if kind == "apply":
        _check_fields(kind, message, APPLY_OPTIONS, required=False)
    if kind == "submit":
        source = message["source"]
        if ("path" in source) == ("data" in source):
            raise ProtocolError("source needs either 'path' (a file) or 'data' (base64 audio file)")
        _check_fields("source", source, {"path": str, "data": str, "name": str}, required=False)
        _check_fields(
            "source",
            source,
            {"start": (int, float), "duration": (int, float, type(None))},
            required=False,
        )
        options = message.get("options", {})
        if not isinstance(options, dict):
            raise ProtocolError("'options' must be an object")
        unknown = set(options) - set(SUBMIT_OPTIONS)
        if unknown:
            raise ProtocolError(
                f"unknown options {sorted(unknown)}; known: {sorted(SUBMIT_OPTIONS)}"
            )
        _check_fields("options", options, SUBMIT_OPTIONS, required=False)
        if not all(isinstance(kind, str) for kind in options.get("midi", [])):
            raise ProtocolError("'midi' must be a list of stem names")
    return message
