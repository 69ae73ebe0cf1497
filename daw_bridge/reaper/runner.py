"""The background half of a REAPER action: submit, follow, report.

A Lua shim writes ``request.txt`` into a fresh job folder and starts
``daw-bridge reaper run <folder>/request.txt`` without waiting. This process
talks to the server and keeps ``status.txt`` beside the request up to date; the
shim polls it from ``reaper.defer`` and, when the state is final, inserts the
stems. The shim asks to cancel by creating ``cancel`` in the same folder.

While it lives, this process rewrites the status file every second with
``heartbeat=<unix time>`` and ``pid=<pid>``: a shim that sees the heartbeat go
stale knows the process died, whatever killed it.

With a server on another machine (the "Server address" setting is not this
machine's), the audio goes to it as bytes and the stems come back as bytes into
the same stem folder, so the shim inserts them as it does any others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from daw_bridge.client.client import Client, ServerUnavailableError, connect
from daw_bridge.errors import DawBridgeError
from daw_bridge.files import check_output_folder
from daw_bridge.midi import parse_kinds
from daw_bridge.midi.notes import retime_midi
from daw_bridge.protocol import DEFAULT_ADDRESS, FINAL_STATES, is_local
from daw_bridge.reaper import keyvalue, stems
from daw_bridge.reaper.choices import DEFAULT_DRUM_KIT
from daw_bridge.reaper.request import KIT_MODE, ItemSpan, Refusal, Request, read_request

log = logging.getLogger(__name__)
#: The server sends job events at least every second; silence this long means trouble.
_EVENT_TIMEOUT = 30.0
_HELLO_TIMEOUT = 3.0
#: Seconds between heartbeats; the shim gives up after 10 s without one (see README).
HEARTBEAT_INTERVAL = 1.0
DRUMS = "drums"


class _Cancelled(Exception):
    pass


class Runner:
    """Follows one request's jobs and mirrors them into the status file."""

    def __init__(self, request_path: Path) -> None:
        self.folder = Path(request_path).parent
        self.request_path = Path(request_path)
        self.status_path = self.folder / "status.txt"
        self.cancel_path = self.folder / "cancel"
        self.status: dict[str, Any] = {"state": "starting"}
        self.jobs: dict[str, str] = {}  # item key -> job id
        self.mode = "split"  # the request's: split, apply or kit
        self.folders: dict[str, Path] = {}  # item key -> the stem folder it claimed
        self.send_bytes = False  # the server cannot read or write this machine's files
        self._last_write = 0.0
        self._lock = threading.Lock()  # the heartbeat thread writes too
        self._stop = threading.Event()

    # -- status -----------------------------------------------------------------------

    def _write(self, force: bool = True) -> None:
        with self._lock:
            now = time.monotonic()
            if force or now - self._last_write > 0.1:
                self.status.update(heartbeat=int(time.time()), pid=os.getpid())
                keyvalue.write(self.status_path, dict(self.status))
                self._last_write = now

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            try:
                self._write()
            except OSError as error:  # a missed beat is not fatal; ten in a row are
                log.warning("could not write the heartbeat: %s", error)

    def _fail(self, error: DawBridgeError, state: str = "failed") -> None:
        self.status.update(state=state, error=error.problem, fix=error.fix or "")
        self._write()

    def _cancel_requested(self) -> bool:
        return self.cancel_path.exists()

    # -- work ---------------------------------------------------------------------------

    def run(self) -> int:
        self._write()
        beat = threading.Thread(target=self._beat, daemon=True)
        beat.start()
        try:
            return self._run()
        except Exception as error:  # any bug: say so in the status, not only in the log
            log.exception("the runner failed")
            self._stop.set()
            beat.join()
            self._fail(
                DawBridgeError(
                    f"daw-bridge stopped unexpectedly: {error}",
                    f"See {self.folder / 'log.txt'}.",
                )
            )
            return 2
        finally:
            self._stop.set()
            beat.join()

    def _run(self) -> int:
        _prune_old_jobs(self.folder.parent, keep=self.folder)
        try:
            request = read_request(self.request_path)
        except (OSError, DawBridgeError) as error:
            problem = error if isinstance(error, DawBridgeError) else DawBridgeError(str(error))
            self._fail(problem)
            return 2
        self.mode = request.setting("mode", "split")
        self.status["items"] = ",".join(entry.key for entry in request.items)
        for entry in request.items:
            self.status[f"item.{entry.key}.state"] = "queued"
            self.status[f"item.{entry.key}.progress"] = "0"
            if isinstance(entry, Refusal):
                self._item_error(entry.key, "refused", entry.problem, entry.fix)
        spans = [entry for entry in request.items if isinstance(entry, ItemSpan)]
        if not spans:
            self._fail(DawBridgeError("Nothing to split.", "Select one or more audio items."))
            return 2
        self.status["state"] = "connecting"
        self._write()
        try:
            client = self._connect(request)
        except DawBridgeError as error:
            self._fail(error)
            return 2
        with client:
            try:
                return self._follow(client, request, spans)
            finally:
                for folder in self.folders.values():
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only if the job left it empty

    def _connect(self, request: Request) -> Client:
        address = request.setting("address", DEFAULT_ADDRESS)
        self.send_bytes = request.flag("send_bytes", default=not is_local(address))
        # A server for another machine's address is started there, never here.
        if request.flag("autostart", default=True) and is_local(address):
            return connect(address, _EVENT_TIMEOUT, autostart=True, log_file=self._server_log())
        try:  # a local server answers in milliseconds
            return connect(address, _EVENT_TIMEOUT, hello_timeout=_HELLO_TIMEOUT)
        except ServerUnavailableError as error:
            raise DawBridgeError(
                f"The daw-bridge server is not running (nothing answered at {address}).",
                "Start it in a terminal with `daw-bridge serve`, or turn on 'Start server "
                "automatically' in daw-bridge Settings.",
            ) from error

    def _server_log(self) -> Path:
        """Beside the job folders: a started server outlives this job's folder."""
        return self.folder.parent.parent / "server.log"

    def _follow(self, client: Client, request: Request, spans: list[ItemSpan]) -> int:
        self.status["state"] = "running"
        try:
            for entry in spans:
                self._check_cancel(client)
                self.jobs[entry.key] = self._submit(client, request, entry)
                self.status[f"item.{entry.key}.job"] = self.jobs[entry.key]
            self._write()
            for entry in spans:
                self._wait(client, entry)
        except _Cancelled:
            _cancel_and_remove(client, list(self.jobs.values()), list(self.folders.values()))
            self.status.update(state="cancelled", error="Cancelled; nothing was inserted.")
            self._write()
            return 1
        except DawBridgeError as error:
            self._fail(error)
            return 2
        done = [e for e in spans if self.status[f"item.{e.key}.state"] == "done"]
        self.status["state"] = "done" if done else "failed"
        if not done:
            self.status.setdefault("error", "No item could be split.")
            self.status.setdefault("fix", "See the message for each item.")
        self._write()
        return 0 if done else 2

    def _submit(self, client: Client, request: Request, entry: ItemSpan) -> str:
        options = submit_options(request)
        if entry.job:  # stems already made: keep does not apply
            return client.apply(entry.job, options.get("preset") or "")
        tag = options.get("preset") or options.get("model") or "stems"
        out = _fresh_folder(Path(request.setting("out_dir")), entry, tag)
        self.folders[entry.key] = out
        self.status[f"item.{entry.key}.out"] = str(out)  # for `reaper cancel` if we die
        if self.send_bytes:  # the stems come back into ``out`` once the job is done
            return client.submit_file(entry.path, entry.start, entry.duration, **options)
        return client.submit(entry.path, out, entry.start, entry.duration, **options)

    def _check_cancel(self, client: Client) -> None:
        if self._cancel_requested():
            for job in self.jobs.values():
                try:
                    client.cancel(job)
                except DawBridgeError:
                    log.warning("could not cancel job %s", job)
            raise _Cancelled

    def _wait(self, client: Client, entry: ItemSpan) -> None:
        key = entry.key

        def on_event(event: dict) -> None:
            self.status[f"item.{key}.state"] = event["state"]
            self.status[f"item.{key}.progress"] = f"{float(event.get('progress') or 0):.3f}"
            self._write(force=event["state"] in FINAL_STATES)
            self._check_cancel(client)

        final = client.wait(self.jobs[key], on_event)
        if final["state"] == "cancelled":
            raise _Cancelled
        if final["state"] != "done":
            error = final.get("error") or {}
            self._item_error(key, "failed", error.get("problem", ""), error.get("fix", ""))
            return
        result = final["result"]
        if self.send_bytes and key in self.folders:
            try:
                result = client.download(final, self.folders[key])
            except DawBridgeError as failure:
                self._item_error(key, "failed", failure.problem, failure.fix or "")
                return
        self._record_result(key, entry, result)

    def _item_error(self, key: str, state: str, problem: str, fix: str) -> None:
        self.status.update(
            {f"item.{key}.state": state, f"item.{key}.error": problem, f"item.{key}.fix": fix}
        )

    def _record_result(self, key: str, entry: ItemSpan, result: dict) -> None:
        chosen = result.get("processed") or result["stems"]
        kit, kit_parent = result.get("drum_kit") or {}, DRUMS
        if self.mode == KIT_MODE:  # the item was the drums: its stems are the pieces
            kit, kit_parent, chosen = chosen, "", {}
        self._record_kit(key, kit, kit_parent)
        names = stems.ordered(list(chosen))
        self.status[f"item.{key}.offset"] = repr(entry.take_offset)
        self.status[f"item.{key}.folder"] = result.get("folder", "")
        self.status[f"item.{key}.stems"] = ",".join(names)
        self.status[f"item.{key}.label"] = result.get("preset") or ""
        for name in names:
            self.status[f"item.{key}.stem.{name}"] = chosen[name]
            look_label, (r, g, b) = stems.label(name), stems.colour(name)
            self.status[f"stem.{name}.label"] = look_label
            self.status[f"stem.{name}.color"] = f"{r},{g},{b}"
        midi = result.get("midi") or {}
        self.status[f"item.{key}.midi"] = ",".join(stems.ordered(list(midi)))
        for kind, path in midi.items():
            if entry.bpm > 0:
                retime_midi(Path(path), entry.bpm)  # REAPER places MIDI by beats
            self.status[f"item.{key}.midi.{kind}"] = path
            self.status[f"stem.{kind}.midi_label"] = f"{stems.label(kind)} MIDI"

    def _record_kit(self, key: str, pieces: dict[str, str], parent: str) -> None:
        """Pieces go on child tracks of ``parent``'s stem track ("": the item's own track)."""
        names = stems.kit_ordered(list(pieces))
        self.status[f"item.{key}.kit"] = ",".join(names)
        self.status[f"item.{key}.kit_parent"] = parent
        for piece in names:
            self.status[f"item.{key}.kit.{piece}"] = pieces[piece]
            (r, g, b) = stems.kit_colour(piece)
            self.status[f"stem.kit:{piece}.label"] = stems.kit_label(piece)
            self.status[f"stem.kit:{piece}.color"] = f"{r},{g},{b}"


def submit_options(request: Request) -> dict[str, Any]:
    """What the server is asked to do for one item of ``request``.

    The drum-kit action (``mode=kit``) separates the item itself with the drum-kit
    model: the item is a drums recording or a drums stem, so its stems are the pieces,
    raw (no residual folded into the last piece; the item itself stays as it was).
    A split passes the "drum kit" setting on only when it delivers a drums stem, so
    the setting never makes "vocals and instrumental" or kept vocals fail.
    """
    kit_model = request.setting("drum_kit")
    if request.setting("mode") == KIT_MODE:
        return {"model": kit_model or DEFAULT_DRUM_KIT, "sum_to_input": False}
    two_stems = request.setting("two_stems") or None
    # The kept stems plus one "rest" stem (the others summed); nothing: all stems.
    # Two-stem mode already keeps one stem and its complement.
    keep = (None if two_stems else request.keep()) or None
    delivers_drums = two_stems in (None, DRUMS) and (keep is None or DRUMS in keep)
    return {
        "model": request.setting("model") or None,
        "two_stems": two_stems,
        "preset": request.setting("preset") or None,
        "midi": parse_kinds(request.setting("midi")) or None,
        "keep": keep,
        "drum_kit": (kit_model or None) if delivers_drums else None,
    }


def _fresh_folder(out_dir: Path, entry: ItemSpan, tag: str) -> Path:
    """A folder no earlier split used: re-splitting never touches earlier stems."""
    if not str(out_dir) or not out_dir.is_absolute():
        raise DawBridgeError(
            f"The output folder '{out_dir}' is not an absolute path.",
            "Save the project, or set an output folder in daw-bridge Settings.",
        )
    base = f"{entry.path.stem} {entry.start:.3f}-{entry.start + entry.duration:.3f}s {tag}"
    check_output_folder(out_dir / "daw-bridge")  # a clear message, not a bare OSError
    (out_dir / "daw-bridge").mkdir(parents=True, exist_ok=True)
    for number in range(1, 10_000):
        candidate = out_dir / "daw-bridge" / (base if number == 1 else f"{base} ({number})")
        try:
            candidate.mkdir()  # claims the name, even against a second item of this request
        except FileExistsError:
            continue
        return candidate
    raise DawBridgeError(f"Too many earlier splits named '{base}' in {out_dir}.", "Tidy it up.")


_KEEP_JOB_FOLDERS_SECONDS = 7 * 24 * 3600


def _prune_old_jobs(jobs: Path, keep: Path) -> None:
    """Job folders hold only requests, statuses and logs; a week is plenty for debugging."""
    cutoff = time.time() - _KEEP_JOB_FOLDERS_SECONDS
    for folder in jobs.iterdir():
        with contextlib.suppress(OSError):
            if folder != keep and folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder)


def run(request_path: Path) -> int:
    return Runner(request_path).run()


def _cancel_and_remove(client: Client | None, jobs: list[str], folders: list[Path]) -> None:
    """Cancel a click's jobs and remove every stem folder it made, finished ones too.

    Waits for each job to end first: a job still writing would otherwise leave files
    in a folder just removed.
    """
    for job in jobs if client else []:
        with contextlib.suppress(DawBridgeError):
            client.cancel(job)
    for job in jobs if client else []:
        with contextlib.suppress(DawBridgeError):
            client.wait(job)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def cancel_leftovers(request_path: Path) -> int:
    """Clean up after a runner that died: cancel its server jobs, remove its stem folders.

    The shim starts this (``daw-bridge reaper cancel``) when the heartbeat stops, so a
    dead runner leaves neither a job working for nobody nor stems nobody inserts.
    """
    folder = Path(request_path).parent
    status = keyvalue.read(folder / "status.txt")
    request = read_request(request_path)
    keys = status.get("items", "").split(",")
    jobs = [status[f"item.{k}.job"] for k in keys if status.get(f"item.{k}.job")]
    folders = [Path(status[f"item.{k}.out"]) for k in keys if status.get(f"item.{k}.out")]
    address = request.setting("address", DEFAULT_ADDRESS)
    try:
        with connect(address, _EVENT_TIMEOUT, hello_timeout=_HELLO_TIMEOUT) as client:
            _cancel_and_remove(client, jobs, folders)
    except DawBridgeError as error:
        log.warning("could not cancel the jobs %s: %s", jobs, error)
        _cancel_and_remove(None, [], folders)
    status.update(state="cancelled", error="The runner stopped; its jobs were cancelled.")
    keyvalue.write(folder / "status.txt", status)
    return 1
