"""The versioned message protocol shared by server and client.

Messages are single ZeroMQ frames holding a JSON object with a ``type``; the
client's DEALER socket talks to the server's ROUTER socket. Requests carry an
optional ``req`` id that the reply echoes. This module must stay light: the
client imports it and starts in well under 150 ms, so no torch, no numpy.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_ADDRESS = "tcp://127.0.0.1:5797"
#: Larger messages are dropped by ZeroMQ before they reach our code. Decoding one
#: message holds up the server's loop (every client's replies and heartbeats): 16 MiB
#: costs about 0.4 s on 2 vCPUs, 256 MiB cost 6-8 s (benchmarks/server_loop.py).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: The server sends job events at least this often while a job is active.
HEARTBEAT_SECONDS = 1.0

#: Request type -> required fields with their JSON types.
REQUESTS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "hello": {},
    "status": {},
    "models": {},
    # Audio as bytes: announce the file, send it in chunks, then submit {"upload": id}.
    "upload": {"name": str, "size": int, "sha256": str},
    "chunk": {"upload": str, "offset": int, "data": str},
    # Without "out_dir", a remote job: the server keeps the files in its own private
    # area, its result lists them ("files"), the client fetches them in chunks and then
    # says "delivered", which removes them from the server.
    "submit": {"source": dict},
    "fetch": {"job": str, "path": str, "offset": int},
    "delivered": {"job": str},
    "cancel": {"job": str},
    "result": {"job": str},
    "watch": {"job": str},
    "shutdown": {},
    # Re-apply an effect preset to a finished job's raw stems: a new job, no separation.
    "apply": {"job": str, "preset": str},
}
#: Optional fields of an "apply" request.
APPLY_OPTIONS: dict[str, type | tuple[type, ...]] = {"tail": str}
#: Optional fields of other requests: where stems go (the server's machine), a
#: chunk's own SHA-256 (refused, not written, if the bytes differ), how much to fetch.
OPTIONAL_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "submit": {"out_dir": str},
    "chunk": {"sha256": str},
    "fetch": {"size": int},
}
#: Optional submit options and their types.
SUBMIT_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "two_stems": (str, type(None)),
    "format": str,
    "sum_to_input": bool,
    "shifts": int,
    "overwrite": bool,
    "midi": list,
    "keep": list,  # stems to deliver; the others arrive summed as "rest"
    "drum_kit": str,  # a model that splits the drums stem into its pieces
    "preset": str,  # a preset name or an absolute path to a .toml file
    "tail": str,  # "cut" or "extend": overrides the preset's own
}
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")


#: Longest text field (a path, a name, an option); only a chunk's audio may be longer.
MAX_TEXT_CHARS = 4096
#: Longest file or folder name, in UTF-8 bytes, as most file systems allow.
MAX_NAME_BYTES = 255
#: Longest span start or duration a request may name: 10 million seconds (115 days).
MAX_SECONDS = 1e7
MAX_SHIFTS = 20
#: Longest integer literal accepted (Python would otherwise parse thousands of digits).
_MAX_INT_DIGITS = 20


class ProtocolError(ValueError):
    """A message that does not follow this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **message}, separators=(",", ":")).encode()


def is_local(address: str) -> bool:
    """Whether only this machine can connect to ``address`` (loopback TCP, ipc, inproc).

    Here, not in the server, because the client decides by it too: a server that is
    not local cannot read the client's files, so audio and stems travel as bytes.
    """
    transport, _, rest = address.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface or a host name: assume the network
        return False


def _refuse_constant(name: str) -> float:
    raise ProtocolError(f"{name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ProtocolError(f"an integer of {len(text)} digits is too long")
    return int(text)


def decode(frame: bytes) -> dict[str, Any]:
    """Parse one frame; NaN, Infinity, huge integers and deep nesting are refused."""
    try:
        message = json.loads(
            frame.decode("utf-8"), parse_constant=_refuse_constant, parse_int=_bounded_int
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"not a JSON message: {error}") from error
    except RecursionError as error:
        raise ProtocolError("the JSON is nested too deeply") from error
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


def _check_text(name: str, value: Any, limit: int = MAX_TEXT_CHARS) -> None:
    """Text a file system and a reply can carry: bounded, no NUL, no lone surrogates."""
    if not isinstance(value, str):
        return  # its type is checked by _check_fields
    if len(value) > limit:
        raise ProtocolError(f"'{name}' is {len(value):,} characters long; at most {limit:,}")
    if "\0" in value:
        raise ProtocolError(f"'{name}' contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ProtocolError(f"'{name}' is not valid Unicode text ({error.reason})") from None


def _check_path(name: str, value: Any) -> None:
    _check_text(name, value)
    if isinstance(value, str):
        for part in value.replace("\\", "/").split("/"):
            if len(part.encode("utf-8")) > MAX_NAME_BYTES:
                raise ProtocolError(
                    f"'{name}' holds a name of {len(part.encode('utf-8'))} bytes; file systems "
                    f"allow at most {MAX_NAME_BYTES}"
                )


def _is_absolute(path: str) -> bool:
    """Absolute on this (the server's) system: ``C:\\...`` is not, on Linux."""
    return Path(path).is_absolute()


def _check_seconds(name: str, value: Any, allow_zero: bool) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return  # None, or a type _check_fields refuses
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= MAX_SECONDS):
        low = "0" if allow_zero else "more than 0"
        raise ProtocolError(f"'{name}' must be {low} to {MAX_SECONDS:,.0f} seconds, not {value}")


def _check_texts(message: dict[str, Any], kind: str) -> None:
    """Every text field of a request, by what it names."""
    for name in ("job", "preset", "tail", "upload", "sha256"):
        _check_text(name, message.get(name))
    if kind == "upload":
        _check_path("name", message["name"])
    if kind in ("chunk", "fetch") and message["offset"] < 0:
        raise ProtocolError("'offset' must be 0 or more")
    if kind == "fetch":
        _check_path("path", message["path"])
        if message.get("size", 1) < 1:
            raise ProtocolError("'size' must be 1 or more (bytes to fetch)")
    if kind != "submit":
        return
    source, options = message["source"], message.get("options", {})
    _check_path("path", source.get("path"))
    _check_text("upload", source.get("upload"))
    _check_path("out_dir", message.get("out_dir"))
    if "out_dir" in message and not _is_absolute(message["out_dir"]):
        raise ProtocolError(
            "'out_dir' must be an absolute path (a relative one would land wherever the "
            "server happens to run)"
        )
    _check_seconds("start", source.get("start", 0), allow_zero=True)
    _check_seconds("duration", source.get("duration"), allow_zero=False)
    for name in ("model", "two_stems", "format", "tail", "drum_kit"):
        _check_text(name, options.get(name))
    _check_path("preset", options.get("preset"))
    if not 0 <= options.get("shifts", 0) <= MAX_SHIFTS:
        raise ProtocolError(f"'shifts' must be 0 to {MAX_SHIFTS}")
    for name in ("midi", "keep"):
        kinds = options.get(name, [])
        if len(kinds) > 8:
            raise ProtocolError(f"'{name}' names at most 8 stems")
        for kind in kinds:
            _check_text(name, kind, limit=64)


def validate_request(message: dict[str, Any]) -> dict[str, Any]:
    """Check a request's type, version and fields; return it unchanged."""
    kind = message["type"]
    if kind not in REQUESTS:
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        raise ProtocolError(f"unknown message type {shown!r}; known: {', '.join(REQUESTS)}")
    version = message.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # true == 1 in Python
        shown = repr(version) if len(repr(version)) <= 64 else "given"
        raise ProtocolError(
            f"protocol version {shown} is not {PROTOCOL_VERSION}: "
            "update daw-bridge so client and server match"
        )
    _check_fields(kind, message, REQUESTS[kind], required=True)
    if kind == "apply":
        _check_fields(kind, message, APPLY_OPTIONS, required=False)
    _check_fields(kind, message, OPTIONAL_FIELDS.get(kind, {}), required=False)
    if kind == "submit":
        source = message["source"]
        if ("path" in source) == ("upload" in source):
            raise ProtocolError(
                "source needs either 'path' (a file) or 'upload' (the id of uploaded audio)"
            )
        _check_fields("source", source, {"path": str, "upload": str}, required=False)
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
            shown = sorted(name[:64] for name in unknown)[:5]
            raise ProtocolError(f"unknown options {shown}; known: {sorted(SUBMIT_OPTIONS)}")
        _check_fields("options", options, SUBMIT_OPTIONS, required=False)
        for name in ("midi", "keep"):
            if not all(isinstance(kind, str) for kind in options.get(name, [])):
                raise ProtocolError(f"'{name}' must be a list of stem names")
    _check_texts(message, kind)
    return message
