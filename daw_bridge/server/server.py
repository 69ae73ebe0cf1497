"""The resident inference server: one ROUTER socket, one worker, models kept warm.

All socket I/O happens on the main thread (ZeroMQ sockets are not thread-safe);
the worker reports through ``Job`` objects and a notification queue, and the
loop turns those into events for the clients watching each job. Any message
that is not valid gets an error reply; nothing a client sends stops the server.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from pathlib import Path
from typing import Any

import zmq

from daw_bridge import __version__
from daw_bridge.errors import DawBridgeError
from daw_bridge.files import check_output_folder
from daw_bridge.models.loader import model_names
from daw_bridge.protocol import (
    FINAL_STATES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode,
    encode,
    validate_request,
)
from daw_bridge.server.cache import StemCache
from daw_bridge.server.jobs import Job, JobStore
from daw_bridge.server.models import ModelPool, resident_bytes
from daw_bridge.server.worker import Worker

log = logging.getLogger(__name__)
_PROGRESS_INTERVAL = 0.2


class Server:
    def __init__(
        self,
        bind: str,
        model: str,
        device: str,
        state_dir: Path,
        model_dir: Path | None = None,
        cache_bytes: int = 2 * 2**30,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        model_memory_bytes: int = 8 * 2**30,
        backend: str | None = None,
    ) -> None:
        self.bind = bind
        self.max_message_bytes = max_message_bytes
        self.pool = ModelPool(model, device, model_dir, model_memory_bytes, backend)
        self.store = JobStore(state_dir / "jobs")
        self.cache = StemCache(state_dir / "stems", cache_bytes)
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.notifications: queue.Queue[Job] = queue.Queue()
        self.watchers: dict[str, set[bytes]] = {}
        self.worker = Worker(self.queue, self.pool, self.cache, self.store, self.notifications.put)
        # Re-applying a preset takes a second or two: it does not wait behind separations.
        self.preset_queue: queue.Queue[Job | None] = queue.Queue()
        self.preset_worker = Worker(
            self.preset_queue,
            self.pool,
            self.cache,
            self.store,
            self.notifications.put,
            name="daw-bridge-presets",
        )
        self.running = True

    # -- lifecycle ------------------------------------------------------------------

    def serve_forever(self) -> None:
        self.cache.clean_staging()
        for job in self.store.recover():
            log.warning("job %s was interrupted by a previous shutdown", job.id)
        try:
            self.pool.get()  # keep the default model warm from the start
        except DawBridgeError as error:
            log.warning("default model not loaded; jobs will fail until fixed:\n%s", error)
        context = zmq.Context()
        socket = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(self.bind)
        self.worker.start()
        self.preset_worker.start()
        log.info("serving on %s", self.bind)
        print(f"daw-bridge server ready on {self.bind}", flush=True)
        last_tick = 0.0
        try:
            while self.running:
                if socket.poll(50):
                    self._receive(socket)
                while not self.notifications.empty():
                    self._publish(socket, self.notifications.get())
                now = time.monotonic()
                if now - last_tick >= _PROGRESS_INTERVAL:
                    last_tick = now
                    self._tick(socket, now)
        finally:
            for job in self.store.active():
                job.cancel.set()
            self.queue.put(None)
            self.preset_queue.put(None)
            self.worker.join(timeout=5)
            self.preset_worker.join(timeout=5)
            socket.close(0)
            context.term()

    # -- messages -------------------------------------------------------------------

    def _receive(self, socket: zmq.Socket) -> None:
        frames = socket.recv_multipart(zmq.NOBLOCK)
        client, payload = frames[0], frames[1:]
        request_id = None
        try:
            if len(payload) != 1:
                raise ProtocolError(f"expected one frame, got {len(payload)}")
            message = decode(payload[0])
            request_id = message.get("req")
            reply = self._handle(client, validate_request(message))
        except ProtocolError as error:
            reply = {
                "type": "error",
                "problem": f"Invalid message: {error}.",
                "fix": "Correct that field of the request (daw_bridge/protocol.py says what "
                "each one takes), or update daw-bridge so client and server match.",
            }
        except DawBridgeError as error:
            reply = {"type": "error", "problem": error.problem, "fix": error.fix or ""}
        except Exception as error:  # never let a message take the server down
            log.exception("error handling a message")
            reply = {"type": "error", "problem": f"Internal error: {error!r}", "fix": "Report it."}
        if request_id is not None and isinstance(request_id, (str, int)):
            reply["req"] = request_id
        socket.send_multipart([client, encode(reply)])

    def _handle(self, client: bytes, message: dict[str, Any]) -> dict[str, Any]:
        kind = message["type"]
        if kind == "hello":
            return {"type": "hello", "protocol": PROTOCOL_VERSION, "version": __version__}
        if kind == "status":
            return {
                "type": "status",
                "model": self.pool.default,
                "loaded": self.pool.loaded(),
                "device": self.pool.device_name(),
                "backend": self.pool.backend_name(),
                "queued": self.queue.qsize(),
                "running": self.worker.current.id if self.worker.current else None,
                "rss_mb": round(resident_bytes() / 2**20, 1),
                "cache_mb": round(self.cache.size() / 2**20, 1),
            }
        if kind == "models":
            return {"type": "models", "models": model_names(), "loaded": self.pool.loaded()}
        if kind == "submit":
            # Refused now, with the path, rather than failing after the separation.
            check_output_folder(message["out_dir"])
            return self._accept(client, message, self.queue)
        if kind == "shutdown":
            self.running = False
            return {"type": "ok"}
        job = self.store.get(message["job"])
        if job is None:
            raise DawBridgeError(f"No job {message['job']!r} on this server.", "Check the job id.")
        if kind == "apply":
            return self._apply(client, job, message)
        if kind == "cancel":
            job.cancel.set()
            if job.state == "queued":
                job.state = "cancelled"
                self.store.save(job)
                self.notifications.put(job)
            return {"type": "job", **job.public()}
        if kind == "watch" and not job.final:  # a final job has no more events to send
            self.watchers.setdefault(job.id, set()).add(client)
        return {"type": "job", **job.public()}  # "result" and "watch"

    def _apply(self, client: bytes, source: Job, message: dict[str, Any]) -> dict[str, Any]:
        """Queue a preset job on ``source``'s raw stems; refuse one that has no stems yet."""
        if source.state != "done" or not (source.result or {}).get("stems"):
            raise DawBridgeError(
                f"Job {source.id} is {source.state}: only a finished job's stems can take "
                "a preset.",
                "Wait until it is done (`daw-bridge client result JOB`), or split the clip again.",
            )
        check_output_folder(source.result["folder"])  # the preset's subfolder goes in it
        return self._accept(client, message, self.preset_queue)

    def _accept(
        self, client: bytes, message: dict[str, Any], jobs: queue.Queue[Job | None]
    ) -> dict[str, Any]:
        """Create the job, let its sender watch it, and queue it for ``jobs``' worker."""
        job = self.store.create(client, message)
        self.watchers[job.id] = {client}
        jobs.put(job)
        return {"type": "accepted", "job": job.id}

    # -- events ---------------------------------------------------------------------

    def _publish(self, socket: zmq.Socket, job: Job) -> None:
        # One snapshot decides both the event and whether watching ends: the worker
        # thread may finish the job meanwhile, and reading ``job.state`` twice once
        # dropped the watchers after sending only a progress event (a lost final event).
        # Once the final event is sent, from a notification or a tick, watching ends.
        snapshot = job.public()
        final = snapshot["state"] in FINAL_STATES
        event = {"type": "job" if final else "progress", **snapshot}
        for client in self.watchers.get(job.id, ()):
            socket.send_multipart([client, encode(event)])  # dropped if the client is gone
        if final:
            self.watchers.pop(job.id, None)

    def _tick(self, socket: zmq.Socket, now: float) -> None:
        """Progress of active jobs; doubles as the heartbeat clients watch for."""
        for job in self.store.active():
            if job.id in self.watchers:
                self._publish(socket, job)


def default_state_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("DAW_BRIDGE_STATE_DIR") or user_cache_dir("daw-bridge")) / "server"
