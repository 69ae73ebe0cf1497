"""The resident inference server: one ROUTER socket, one worker, models kept warm.

All socket I/O happens on the main thread (ZeroMQ sockets are not thread-safe);
the worker reports through ``Job`` objects and a notification queue, and the
loop turns those into events for the clients watching each job. Any message
that is not valid gets an error reply; nothing a client sends stops the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket as net
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from daw_bridge import __version__, keys
from daw_bridge.errors import DawBridgeError
from daw_bridge.files import check_output_folder
from daw_bridge.models.loader import model_names
from daw_bridge.models.weights import cache_dir
from daw_bridge.protocol import (
    FINAL_STATES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode,
    encode,
    validate_request,
)
from daw_bridge.separation.ensemble_library import ensemble_names
from daw_bridge.server.access import Gate, check_bind, confine
from daw_bridge.server.cache import StemCache
from daw_bridge.server.jobs import KEEP_DAYS, KEEP_JOBS, Job, JobStore
from daw_bridge.server.lock import StateLock
from daw_bridge.server.models import ModelPool, resident_bytes
from daw_bridge.server.outbox import Outbox
from daw_bridge.server.uploads import CHUNK_BYTES, Uploads
from daw_bridge.server.worker import Worker, is_remote, remote_apply_error

if TYPE_CHECKING:
    from daw_bridge.cluster.pool import WorkerPool

log = logging.getLogger(__name__)
_PROGRESS_INTERVAL = 0.2
#: How often remote jobs' areas are checked against their jobs' retention.
_OUTBOX_PRUNE_INTERVAL = 600.0


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
        keep_days: float = KEEP_DAYS,
        keep_jobs: int = KEEP_JOBS,
        cluster: WorkerPool | None = None,
    ) -> None:
        check_bind(bind)  # before any model loads
        self.bind = bind
        self.max_message_bytes = max_message_bytes
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # it holds every job's request: the user's only
        self.pool = ModelPool(model, device, model_dir, model_memory_bytes, backend, cluster)
        self.lock = StateLock(self.state_dir)
        self.store = JobStore(state_dir / "jobs", keep_days, keep_jobs)
        self.cache = StemCache(state_dir / "stems", cache_bytes)
        self.uploads = Uploads(self.state_dir)
        self.outbox = Outbox(self.state_dir / "outbox")
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.notifications: queue.Queue[Job] = queue.Queue()
        # Workers wake the socket loop through this pair as soon as a job event is
        # ready, so a finished job's event never waits for a poll timeout.
        self._wake_up, self._wake_up_sender = net.socketpair()
        self._wake_up.setblocking(False)
        self._wake_up_sender.setblocking(False)
        self.watchers: dict[str, set[bytes]] = {}
        self.worker = Worker(
            self.queue,
            self.pool,
            self.cache,
            self.store,
            self._notify,
            self.uploads,
            outbox=self.outbox,
        )
        # Re-applying a preset takes a second or two: it does not wait behind separations.
        self.preset_queue: queue.Queue[Job | None] = queue.Queue()
        self.preset_worker = Worker(
            self.preset_queue,
            self.pool,
            self.cache,
            self.store,
            self._notify,
            self.uploads,
            name="daw-bridge-presets",
            outbox=self.outbox,
        )
        self.running = True

    # -- lifecycle ------------------------------------------------------------------

    def serve_forever(self) -> None:
        self.lock.acquire(self.bind)  # before anything in the state folder is touched
        self.cache.clean_staging()
        self.uploads.start()  # and what a killed run left goes
        for job in self.store.recover():
            log.warning("job %s was interrupted by a previous shutdown", job.id)
            self.worker.undo_delivery(job)
        self.outbox.prune(self._wants_area)  # areas of interrupted or forgotten jobs go
        try:
            self.pool.get()  # keep the default model warm from the start
        except DawBridgeError as error:
            log.warning("default model not loaded; jobs will fail until fixed:\n%s", error)
        context = zmq.Context()
        socket = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        socket.setsockopt(zmq.LINGER, 0)
        self.gate = Gate(context)
        self.gate.secure(socket)
        try:
            socket.bind(self.bind)
        except zmq.ZMQError as error:
            socket.close(0)
            self.gate.stop()
            context.term()
            self.lock.release()
            raise _bind_error(self.bind, error) from None
        self.worker.start()
        self.preset_worker.start()
        log.info("serving on %s", self.bind)
        print(f"daw-bridge server ready on {self.bind}", flush=True)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(self._wake_up, zmq.POLLIN)
        last_tick, last_prune = 0.0, time.monotonic()
        try:
            while self.running:
                until_tick = last_tick + _PROGRESS_INTERVAL - time.monotonic()
                ready = dict(poller.poll(max(0, int(until_tick * 1000))))
                if socket in ready:
                    self._receive(socket)
                if self._wake_up.fileno() in ready:
                    self._drain_wake_ups()
                while not self.notifications.empty():
                    self._publish(socket, self.notifications.get())
                now = time.monotonic()
                if now - last_tick >= _PROGRESS_INTERVAL:
                    last_tick = now
                    self._tick(socket, now)
                    self.uploads.expire(now)
                if now - last_prune >= _OUTBOX_PRUNE_INTERVAL:
                    last_prune = now
                    self.outbox.prune(self._wants_area)
        finally:
            for job in self.store.active():
                job.cancel.set()
            self.queue.put(None)
            self.preset_queue.put(None)
            self.worker.join(timeout=5)
            self.preset_worker.join(timeout=5)
            socket.close(0)
            self.gate.stop()
            context.term()
            self.uploads.stop()
            self.lock.release()
            self._wake_up.close()
            self._wake_up_sender.close()

    def _notify(self, job: Job) -> None:
        """Called by the workers: queue the job's event and wake the socket loop."""
        self.notifications.put(job)
        # A full pair means the loop has wake-ups waiting already.
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self._wake_up_sender.send(b"\0")

    def _drain_wake_ups(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_up.recv(4096):
                pass

    # -- messages -------------------------------------------------------------------

    def _receive(self, socket: zmq.Socket) -> None:
        frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
        client, payload = frames[0].bytes, [frame.bytes for frame in frames[1:]]
        caller = frames[-1].get("User-Id")  # the client's key, as the ZAP handler admitted it
        request_id = None
        try:
            if len(payload) != 1:
                raise ProtocolError(f"expected one frame, got {len(payload)}")
            message = decode(payload[0])
            request_id = message.get("req")
            reply = self._handle(client, validate_request(message), caller)
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

    def _handle(self, client: bytes, message: dict[str, Any], caller: str) -> dict[str, Any]:
        kind = message["type"]
        if not self.gate.admits(caller):
            raise DawBridgeError(
                "This client's key is no longer allowed on this server.",
                "Ask the server's owner to run `daw-bridge keys allow KEY` for it again.",
            )
        owner = caller == self.gate.owner
        confine(message, owner, [self.state_dir, cache_dir(), keys.keys_dir()])
        if kind == "hello":
            return {"type": "hello", "protocol": PROTOCOL_VERSION, "version": __version__}
        if kind == "status":
            return {
                "type": "status",
                "model": self.pool.default,
                "loaded": self.pool.loaded(),
                "models_mb": {
                    name: round(size / 2**20, 1) for name, size in self.pool.memory().items()
                },
                "device": self.pool.device_name(),
                # Ray workers separating this server's jobs (serve --ray), else None.
                "cluster_workers": (
                    len(self.pool.cluster.actors) if self.pool.cluster is not None else None
                ),
                "backend": self.pool.backend_name(),
                # Only the caller's jobs: another key's job ids would let it touch them.
                "queued": sum(
                    job.state == "queued" and self._owns(job, caller) for job in self.store.active()
                ),
                "running": next(
                    (
                        job.id
                        for job in (self.worker.current, self.preset_worker.current)
                        if job is not None and self._owns(job, caller)
                    ),
                    None,
                ),
                "rss_mb": round(resident_bytes() / 2**20, 1),
                "cache_mb": round(self.cache.size() / 2**20, 1),
            }
        if kind == "models":
            return {
                "type": "models",
                "models": model_names(),
                "ensembles": ensemble_names(),
                "loaded": self.pool.loaded(),
            }
        if kind == "upload":
            upload = self.uploads.begin(caller, message["name"], message["size"], message["sha256"])
            # Base64 makes 3 bytes 4 characters; 64 KiB is left for the rest of a chunk.
            fits = (self.max_message_bytes - 2**16) // 4 * 3
            return {"type": "upload", "upload": upload, "chunk_bytes": min(CHUNK_BYTES, fits)}
        if kind == "chunk":
            received = self.uploads.append(
                caller, message["upload"], message["offset"], message["data"], message.get("sha256")
            )
            return {"type": "chunk", "upload": message["upload"], "received": received}
        if kind == "submit":
            # Refused now, with the path, rather than failing after the separation.
            if "out_dir" in message:  # none: a remote job, delivered into its own area
                check_output_folder(message["out_dir"])
            upload = message["source"].get("upload")
            if upload is not None:
                self.uploads.claim(caller, upload)
            try:
                return self._accept(client, message, self.queue, caller)
            except BaseException:
                if upload is not None:
                    self.uploads.release(upload)
                raise
        if kind == "shutdown":
            if not owner:
                raise DawBridgeError(
                    "Only the owner of this server may shut it down.",
                    "Ask the owner of the server's machine to stop it.",
                )
            self.running = False
            return {"type": "ok"}
        job = self.store.get(message["job"])
        if job is None or not self._owns(job, caller):  # another key's job is not there
            raise DawBridgeError(f"No job {message['job']!r} on this server.", "Check the job id.")
        if kind == "apply":
            return self._apply(client, job, message, caller)
        if kind == "fetch":
            return self._fetch(job, message)
        if kind == "delivered":
            return self._delivered(job)
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

    def _apply(
        self, client: bytes, source: Job, message: dict[str, Any], caller: str
    ) -> dict[str, Any]:
        """Queue a preset job on ``source``'s raw stems; refuse one that has no stems yet."""
        if source.state != "done" or not (source.result or {}).get("stems"):
            raise DawBridgeError(
                f"Job {source.id} is {source.state}: only a finished job's stems can take "
                "a preset.",
                "Wait until it is done (`daw-bridge client result JOB`), or split the clip again.",
            )
        if is_remote(source.request):
            raise remote_apply_error(source.id)
        check_output_folder(source.result["folder"])  # the preset's subfolder goes in it
        return self._accept(client, message, self.preset_queue, caller)

    def _accept(
        self, client: bytes, message: dict[str, Any], jobs: queue.Queue[Job | None], caller: str
    ) -> dict[str, Any]:
        """Create the job, owned by ``caller``'s key, let its sender watch it, and queue it."""
        job = self.store.create(client, message, owner=caller)
        self.watchers[job.id] = {client}
        jobs.put(job)
        return {"type": "accepted", "job": job.id}

    def _fetch(self, job: Job, message: dict[str, Any]) -> dict[str, Any]:
        """A chunk of one file a finished remote job delivered into its area."""
        files = (job.result or {}).get("files")
        if job.state != "done" or not isinstance(files, list):
            where = (
                f"it is {job.state}"
                if job.state != "done"
                else "it wrote its stems into a folder on the server's machine"
            )
            raise DawBridgeError(
                f"Job {job.id} has no files to fetch: {where}.",
                "Fetch only from a finished job submitted without an output folder.",
            )
        size = message.get("size", CHUNK_BYTES)
        return self.outbox.read(job.id, files, message["path"], message["offset"], size)

    def _delivered(self, job: Job) -> dict[str, Any]:
        """The client has its files: remove the job's area and forget the job."""
        if not is_remote(job.request):
            raise DawBridgeError(
                f"Job {job.id} wrote its stems into a folder on the server's machine; "
                "there is nothing of it to release.",
                "Send 'delivered' only for a job submitted without an output folder.",
            )
        if not job.final:
            raise DawBridgeError(
                f"Job {job.id} is still {job.state}; its files are not complete yet.",
                "Wait for it to finish (or cancel it), then fetch its files.",
            )
        self.outbox.remove(job.id)
        self.store.forget(job)
        self.watchers.pop(job.id, None)
        return {"type": "ok"}

    def _wants_area(self, name: str) -> bool:
        """Whether the outbox area ``name`` belongs to a remote job that may still be
        fetched: running, or done within the job records' retention."""
        job = self.store.get(name)
        if job is None or not is_remote(job.request):
            return False
        if not job.final:
            return True
        return job.state == "done" and time.time() - job.created < self.store.keep_seconds

    def _owns(self, job: Job, caller: str) -> bool:
        """Jobs recorded before keys existed belong to the owner."""
        return (job.owner or self.gate.owner) == caller

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


def _bind_error(bind: str, error: zmq.ZMQError) -> DawBridgeError:
    """One line, no traceback: what `serve` prints when it cannot listen."""
    if error.errno == zmq.EADDRINUSE:
        problem = f"{bind} is already in use by another program: stop it, or pass another --bind."
    else:
        problem = f"Cannot serve on {bind} ({error.strerror}): pass another --bind."
    return DawBridgeError(problem)
