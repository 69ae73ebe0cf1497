"""A light client for the daw-bridge server: ZeroMQ and JSON only, no torch.

It notices a dead or hung server (no reply, or no job event for ``timeout``
seconds while waiting: the server sends one at least every second) and says so
clearly. ``autostart`` launches a server in the background on first use.
Every connection is CURVE-encrypted with the owner's keys (:mod:`daw_bridge.keys`),
found without any set-up; a server that refuses the key, or cannot prove it is
the server this client knows, is reported as such, at once.

A server on another machine cannot read this machine's files, nor write into its
folders: :meth:`Client.submit_file` sends the audio as bytes and
:meth:`Client.download` brings the stems back as bytes, checked, into a folder
here, all at once or not at all.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import zmq
from zmq.utils.monitor import recv_monitor_message

from daw_bridge import keys
from daw_bridge.delivery import Delivery
from daw_bridge.errors import DawBridgeError
from daw_bridge.files import check_output_folder
from daw_bridge.protocol import (
    DEFAULT_ADDRESS,
    FINAL_STATES,
    MAX_MESSAGE_BYTES,
    ProtocolError,
    decode,
    encode,
)

log = logging.getLogger(__name__)
_IDEMPOTENT = {"hello", "status", "models", "result", "watch", "fetch"}
#: Bytes asked for per download chunk: on a slow link a reply still comes well within
#: the client's timeout (the server sends at most 4 MiB whatever is asked).
FETCH_BYTES = 2**20
#: Times one chunk of a download is asked for again when it arrives damaged.
_CHUNK_RETRIES = 2
#: Result fields that map names to files, relative to a remote job's area.
_FILE_MAPS = ("stems", "midi", "processed", "drum_kit")
#: Longest wait for a watched job's next event before asking for its state again.
_SILENCE_S = 5.0
_HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


class ServerUnavailableError(DawBridgeError):
    """No server answered, or it stopped answering."""


class AccessRefusedError(DawBridgeError):
    """The server refused this client's key, or is not the server this client knows."""


class Client:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        timeout: float = 10.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.address = address
        self.timeout = timeout
        #: The server's ``--max-message-mb``: it drops larger messages without a word.
        self.max_message_bytes = max_message_bytes
        self._context = zmq.Context.instance()
        self._ids = itertools.count(1)
        self._pending: list[dict[str, Any]] = []  # events that arrived while awaiting a reply
        self._keys = keys.client_pair()
        self._server_key = keys.server_key_for(address)
        self._socket = self._connect()

    def _connect(self) -> zmq.Socket:
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.curve_publickey = self._keys.public.encode("ascii")
        socket.curve_secretkey = self._keys.secret.encode("ascii")
        socket.curve_serverkey = self._server_key.encode("ascii")
        # A refused handshake shows only here; without it, it would look like a dead server.
        self._handshakes = socket.get_monitor_socket(_HANDSHAKE_FAILURES)
        socket.connect(self.address)
        return socket

    def close(self) -> None:
        if self._socket.closed:
            return
        self._socket.disable_monitor()
        self._handshakes.close(0)
        self._socket.close(0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------

    def _unavailable(self, waited: float) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"No daw-bridge server answered at {self.address} within {waited:.1f} s.",
            "Start one with `daw-bridge serve` (or use --autostart); if it is running, "
            "it may be stuck: see its log, stop it and start it again.",
        )

    def _receive(self, timeout: float) -> dict[str, Any]:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._handshakes, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            ready = dict(poller.poll(int(1000 * max(0.0, deadline - time.monotonic()))))
            if self._socket in ready:
                return self._read()
            if self._handshakes in ready:
                event = recv_monitor_message(self._handshakes)["event"]
                self._reconnect()
                raise self._refused(event)
            if time.monotonic() >= deadline:
                # A request that never got an answer poisons the socket's queue: start fresh.
                self._reconnect()
                raise self._unavailable(timeout)

    def _reconnect(self) -> None:
        self.close()
        self._socket = self._connect()

    def _refused(self, event: int) -> AccessRefusedError:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return AccessRefusedError(
                f"The daw-bridge server at {self.address} refused this client's key "
                f"({self._keys.public}).",
                f"On the server's machine, its owner can let it in: "
                f"`daw-bridge keys allow '{self._keys.public}'`.",
            )
        return AccessRefusedError(
            f"The server at {self.address} is not the daw-bridge server this client knows "
            "(the secure handshake failed).",
            "If it runs on this machine, another user or an older daw-bridge started it: "
            "stop it and run `daw-bridge serve`. If it runs on another machine, run "
            f"`daw-bridge keys show` there, then here `daw-bridge keys trust {self.address} "
            "SERVER-KEY`.",
        )

    def _read(self) -> dict[str, Any]:
        try:
            return decode(self._socket.recv())
        except ProtocolError as error:
            raise DawBridgeError(f"The server sent an invalid message: {error}") from error

    def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request and return its reply; errors become :class:`DawBridgeError`.

        A request that changes nothing is sent once more on a fresh socket if its
        reply does not come (ZeroMQ's "lazy pirate" pattern); a submit is never
        resent, so a job is never created twice.
        """
        attempts = 2 if message["type"] in _IDEMPOTENT else 1
        for attempt in range(attempts):
            try:
                return self._request_once(message, (timeout or self.timeout) / attempts)
            except ServerUnavailableError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _request_once(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        request_id = next(self._ids)
        frame = encode({**message, "req": request_id})
        if len(frame) > self.max_message_bytes:
            raise DawBridgeError(
                f"This request is {len(frame) / 2**20:.1f} MiB; the daw-bridge server takes at "
                f"most {self.max_message_bytes / 2**20:.0f} MiB in one message.",
                "Send less in one request: audio goes as a path, or as bytes in chunks "
                "(Client.submit_audio).",
            )
        self._socket.send(frame)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(max(0.0, deadline - time.monotonic()))
            if reply.get("req") != request_id:
                self._pending.append(reply)
                continue
            if reply["type"] == "error":
                raise DawBridgeError(reply["problem"], reply.get("fix") or None)
            return reply

    # -- API ------------------------------------------------------------------------

    def hello(self, timeout: float | None = None) -> dict[str, Any]:
        return self.request({"type": "hello"}, timeout)

    def status(self) -> dict[str, Any]:
        return self.request({"type": "status"})

    def models(self) -> dict[str, Any]:
        return self.request({"type": "models"})

    def submit(
        self,
        path: str | Path,
        out_dir: str | Path,
        start: float = 0.0,
        duration: float | None = None,
        **options: Any,
    ) -> str:
        source = {"path": str(Path(path).resolve()), "start": start, "duration": duration}
        return self._submit(source, out_dir, options)

    def submit_audio(
        self, data: bytes, name: str, out_dir: str | Path | None = None, **options: Any
    ) -> str:
        """Send the audio file's bytes (for a server on another machine or a rendered clip).

        ``name`` gives the format by its suffix (``.wav``, ``.flac``, ``.mp3``...).
        ``out_dir`` is a folder on the server's machine (the owner's only); without
        one the stems stay on the server until :meth:`download` fetches them.
        """
        return self._submit({"upload": self.upload(data, name)}, out_dir, options)

    def submit_file(
        self, path: str | Path, start: float = 0.0, duration: float | None = None, **options: Any
    ) -> str:
        """Split a file of this machine on a server that may be on another one.

        The file goes as bytes (read from disk chunk by chunk, never whole in
        memory); the stems stay in the server's private area until
        :meth:`download` fetches them into a folder here.
        """
        path = Path(path)
        size, digest = _file_facts(path)
        with open(path, "rb") as handle:
            upload = self._upload(path.name, size, digest, handle)
        return self._submit({"upload": upload, "start": start, "duration": duration}, None, options)

    def upload(self, data: bytes, name: str) -> str:
        """Send an audio file's bytes in chunks, each under the message cap; the upload id."""
        import io

        digest = hashlib.sha256(data).hexdigest()
        return self._upload(name, len(data), digest, io.BytesIO(data))

    def _upload(self, name: str, size: int, sha256: str, handle: BinaryIO) -> str:
        """Announce ``size`` bytes, then send them in chunks, each with its own SHA-256."""
        announce = {"type": "upload", "name": name, "size": size, "sha256": sha256}
        reply = self.request(announce)
        # Base64 makes 3 bytes 4 characters; 64 KiB is left for the rest of the message.
        fits = (self.max_message_bytes - 2**16) // 4 * 3
        chunk = max(1, min(int(reply.get("chunk_bytes", fits)), fits))
        offset = 0
        while piece := handle.read(chunk):
            message = {"type": "chunk", "upload": reply["upload"], "offset": offset}
            message["data"] = base64.b64encode(piece).decode("ascii")
            message["sha256"] = hashlib.sha256(piece).hexdigest()
            self.request(message)
            offset += len(piece)
        if offset != size:
            raise DawBridgeError(
                f"{name} changed while it was being sent ({offset:,} bytes, not {size:,}).",
                "Send it again once nothing is writing to it.",
            )
        return reply["upload"]

    def _submit(
        self, source: dict[str, Any], out_dir: str | Path | None, options: dict[str, Any]
    ) -> str:
        if options.get("preset") is not None:
            options = {**options, "preset": preset_reference(options["preset"])}
        message = {
            "type": "submit",
            "source": {k: v for k, v in source.items() if v is not None},
            "options": {k: v for k, v in options.items() if v is not None},
        }
        if out_dir is not None:
            message["out_dir"] = str(Path(out_dir).resolve())
        return self.request(message)["job"]

    def download(
        self, final: dict[str, Any], out_dir: str | Path, overwrite: bool = False
    ) -> dict[str, Any]:
        """Fetch a finished remote job's files into ``out_dir`` here; its result, localised.

        Each file comes in chunks (each checked against its SHA-256, asked for
        again if damaged) into a hidden staging folder, is checked whole against
        its size and SHA-256, and the set is then renamed into place, the
        manifest last: a download cut short, or one that does not match, leaves
        nothing (run it again). Once all is in place the server is told, and it
        removes the job's files and forgets the job.
        """
        job, result = final.get("job", ""), final.get("result") or {}
        files = result.get("files")
        if final.get("state") != "done" or not isinstance(files, list):
            raise DawBridgeError(
                f"Job {job} has no files to download (it is {final.get('state')}, or it "
                "wrote its stems into a folder on the server's machine).",
                "Download a finished job that was submitted without an output folder "
                "(Client.submit_file).",
            )
        for entry in files:
            _check_listed(entry, job)
        folder = Path(out_dir).expanduser().resolve()
        check_output_folder(folder)
        with Delivery(folder, job) as delivery:
            for entry in files:
                self._fetch_file(job, entry, delivery.path(entry["path"]))
            delivery.publish(overwrite)
        try:
            self.request({"type": "delivered", "job": job})
        except DawBridgeError as error:  # the files are here; the server's copy expires
            log.warning("job %s: the server was not told of the delivery: %s", job, error)
        return _localised(result, folder)

    def _fetch_file(self, job: str, entry: dict[str, Any], target: Path) -> None:
        """One listed file, chunk by chunk, into ``target``; checked whole at the end."""
        relative, size, expected = entry["path"], int(entry["size"]), entry["sha256"]
        whole = hashlib.sha256()
        offset = 0
        with open(target, "wb") as handle:
            while offset < size:
                data = self._fetch_chunk(job, relative, offset)
                handle.write(data)
                whole.update(data)
                offset += len(data)
        if offset != size or whole.hexdigest() != expected:
            raise DawBridgeError(
                f"{relative} of job {job} arrived damaged ({offset:,} bytes, SHA-256 "
                f"{whole.hexdigest()[:12]}..., expected {size:,} bytes, {expected[:12]}...); "
                "nothing was written.",
                "Download it again (`Client.download`); if it keeps failing, split again.",
            )

    def _fetch_chunk(self, job: str, relative: str, offset: int) -> bytes:
        """The bytes at ``offset``, checked against the chunk's SHA-256 (asked again if not)."""
        for _attempt in range(_CHUNK_RETRIES + 1):
            message = {"type": "fetch", "job": job, "path": relative, "offset": offset}
            reply = self.request({**message, "size": FETCH_BYTES})
            try:
                data = base64.b64decode(reply.get("data", ""), validate=True)
            except ValueError:
                continue
            if data and hashlib.sha256(data).hexdigest() == reply.get("sha256"):
                return data
        raise DawBridgeError(
            f"The chunk of {relative} (job {job}) at offset {offset:,} arrived damaged "
            f"{_CHUNK_RETRIES + 1} times; nothing was written.",
            "Check the network between here and the server, then download again.",
        )

    def apply(self, job: str, preset: str, tail: str | None = None) -> str:
        """Re-apply ``preset`` (a name or .toml path) to a finished job's raw stems.

        No separation runs: the server processes the job's raw stems into
        ``<stems folder>/<preset name>/`` and returns the id of the new job, whose
        result lists them under ``processed``. ``tail`` is "cut" or "extend".
        """
        message: dict[str, Any] = {"type": "apply", "job": job, "preset": preset_reference(preset)}
        if tail is not None:
            message["tail"] = tail
        return self.request(message)["job"]

    def cancel(self, job: str) -> dict[str, Any]:
        return self.request({"type": "cancel", "job": job})

    def result(self, job: str) -> dict[str, Any]:
        return self.request({"type": "result", "job": job})

    def shutdown(self) -> None:
        self.request({"type": "shutdown"})

    def wait(
        self, job: str, on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Follow ``job`` until it ends; return its final state (done, failed, cancelled)."""
        state = self._watch(job)
        while True:
            if on_event is not None:
                on_event(state)
            if state["state"] in FINAL_STATES:
                return state
            state = self._next_state(job)

    def _watch(self, job: str) -> dict[str, Any]:
        """The job's state now; the server sends this socket its events from here on."""
        state = self.request({"type": "watch", "job": job})
        # Events that arrived before the watch reply are older than it.
        self._pending = [e for e in self._pending if e.get("job") != job]
        return state

    def _next_state(self, job: str) -> dict[str, Any]:
        """The job's next event, or its state asked anew after a silence.

        A running or queued job gets a progress event five times a second, so a
        silence means an event was lost or the server is gone: asking again tells
        the two apart (a dead server raises :class:`ServerUnavailableError`).
        """
        deadline = time.monotonic() + min(self.timeout, _SILENCE_S)
        while True:
            if self._pending:
                event = self._pending.pop(0)
            elif self._socket.poll(int(1000 * max(0.0, deadline - time.monotonic()))):
                event = self._read()
            else:
                return self._watch(job)
            if event.get("job") == job and event["type"] in ("progress", "job"):
                return event


def _file_facts(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of an audio file to send; a clear error if it cannot be read."""
    try:
        size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError as error:
        raise DawBridgeError(
            f"Cannot read {path} to send it to the server ({error.strerror or error}).",
            "Check the path and that the file is readable.",
        ) from None
    return size, digest.hexdigest()


def _check_listed(entry: object, job: str) -> None:
    """A listed file must have a size and SHA-256, and a path that stays inside the
    download folder (a server that lists another is refused, nothing written)."""
    path = entry.get("path") if isinstance(entry, dict) else None
    parts = str(path).replace("\\", "/").split("/")
    unsafe = (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or ".." in parts
        or (len(parts[0]) > 1 and parts[0][1] == ":")
    )
    size, digest = (entry.get("size"), entry.get("sha256")) if isinstance(entry, dict) else (0, 0)
    if unsafe or type(size) is not int or size < 0 or not isinstance(digest, str):
        raise DawBridgeError(
            f"The server listed a file of job {job} that cannot be downloaded safely "
            f"({str(entry)[:200]}); nothing was downloaded.",
            "Ask the server's owner to update daw-bridge; do not use that server meanwhile.",
        )


def _localised(result: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A remote job's result with its files' paths in ``folder`` here, as path mode gives."""
    local = dict(result)
    for name in _FILE_MAPS:
        if isinstance(result.get(name), dict):
            local[name] = {key: str(folder / rel) for key, rel in result[name].items()}
    local["folder"] = str(folder)
    local["manifest"] = str(folder / "manifest.json")
    return local


def preset_reference(preset: str) -> str:
    """A preset name as is; a path made absolute, since the server may run elsewhere."""
    if preset.endswith(".toml") or "/" in preset or os.sep in preset:
        return str(Path(preset).expanduser().resolve())
    return preset


def start_server_in_background(address: str, log_file: Path, extra_args: list[str]) -> None:
    """Launch ``daw-bridge serve`` detached from this process, logging to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "daw_bridge", "serve", "--bind", address, *extra_args]
    with open(log_file, "ab") as log:
        kwargs: dict[str, Any] = {"stdout": log, "stderr": log, "stdin": subprocess.DEVNULL}
        if os.name == "nt":
            kwargs["creationflags"] = (
                subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
            )
        else:
            kwargs["start_new_session"] = True
        subprocess.Popen(command, **kwargs)


def connect(
    address: str = DEFAULT_ADDRESS,
    timeout: float = 10.0,
    autostart: bool = False,
    log_file: Path | None = None,
    server_args: list[str] | None = None,
    startup_timeout: float = 120.0,
    hello_timeout: float | None = None,
) -> Client:
    """A client whose server has answered ``hello``; start one first if asked.

    ``hello_timeout`` bounds the first ``hello`` (default: 1 s with ``autostart``,
    else ``timeout``), for callers that know a running server answers at once.
    """
    client = Client(address, timeout)
    if hello_timeout is None:
        hello_timeout = min(timeout, 1.0) if autostart else timeout
    try:
        client.hello(timeout=hello_timeout)
        return client
    except ServerUnavailableError:
        if not autostart:
            client.close()
            raise
    log_file = log_file or Path.home() / ".daw-bridge-server.log"
    start_server_in_background(address, log_file, server_args or [])
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        try:
            client.hello(timeout=1.0)
            return client
        except ServerUnavailableError:
            continue
    client.close()
    raise ServerUnavailableError(
        f"Started a daw-bridge server for {address}, but it did not become ready "
        f"within {startup_timeout:.0f} s.",
        f"See its log: {log_file}",
    )
