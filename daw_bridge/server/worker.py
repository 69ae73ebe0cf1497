"""The inference worker: runs queued jobs one at a time on the server's device.

Whatever goes wrong in a job (a bug, a full drive, a job record that cannot be
saved) fails that job with a message and the next job runs: the worker thread
never dies. A job's files reach its output folder all at once or not at all
(:mod:`daw_bridge.delivery`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from daw_bridge.audio.io import open_span, read_span, span_sha256
from daw_bridge.delivery import Delivery, staging_folder, sweep, undo
from daw_bridge.errors import CancelledError, DawBridgeError, StateFolderError
from daw_bridge.files import atomic_output, ensure_writable, is_out_of_space
from daw_bridge.midi.convert import check_kinds, midi_for_stems
from daw_bridge.presets.apply import apply_preset, check_tail, processed_folder
from daw_bridge.presets.library import load as load_preset
from daw_bridge.presets.schema import Preset
from daw_bridge.separation.drum_kit import DRUMS, check_drum_kit, split_drums
from daw_bridge.separation.ensemble_library import expand as expand_ensemble
from daw_bridge.separation.keep import check_keep, keep_stems
from daw_bridge.separation.pipeline import (
    can_stream,
    split_span,
    stem_names,
    stem_targets,
    stream_split,
)
from daw_bridge.server.cache import MANIFEST_NAME, StemCache, cache_key
from daw_bridge.server.jobs import Job, JobStore
from daw_bridge.server.models import ModelPool
from daw_bridge.server.outbox import Outbox
from daw_bridge.server.uploads import Uploads

log = logging.getLogger(__name__)
_REMEMBERED_SPANS = 1024


class Worker(threading.Thread):
    """Takes jobs from ``jobs`` until it receives ``None``."""

    def __init__(
        self,
        jobs: queue.Queue[Job | None],
        pool: ModelPool,
        cache: StemCache,
        store: JobStore,
        notify: Callable[[Job], None],
        uploads: Uploads,
        name: str = "daw-bridge-worker",
        outbox: Outbox | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs, self.pool, self.cache, self.store, self.notify = jobs, pool, cache, store, notify
        self.uploads = uploads
        self.outbox = outbox
        self.current: Job | None = None
        # Content hash of recently seen spans: a repeated click skips decoding and hashing.
        self._spans: dict[tuple, tuple[str, int, int]] = {}

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                if not (job.cancel.is_set() or job.final):
                    self.current = job
                    self._run(job)
            except Exception:  # _run reports every failure; this only keeps the thread alive
                log.exception("job %s: unexpected error", job.id)
            finally:
                self.current = None
                self._release_upload(job)  # an upload is only kept for its job

    def _finish(self, job: Job, state: str, error: DawBridgeError | None = None) -> None:
        if error is not None:  # before the state: the server may read the job at any moment
            job.error = {"problem": error.problem, "fix": error.fix or ""}
        job.state = state
        if state != "done" and is_remote(job.request) and self.outbox is not None:
            self.outbox.remove(job.id)  # nothing to fetch: the area holds no complete set
        try:
            self.store.save(job)
        except StateFolderError as failure:  # the client still learns the outcome
            log.error("job %s ended %s, but its record was not saved: %s", job.id, state, failure)
        self.notify(job)

    def _run(self, job: Job) -> None:
        try:
            job.state = "running"
            self.store.save(job)  # a full state drive fails the job here, clearly
            self.notify(job)
            if job.request["type"] == "apply":
                job.result = self._reapply(job)
            else:
                job.result = self._separate_file(job, self._source(job))
        except CancelledError as error:
            self._finish(job, "cancelled", error)
        except DawBridgeError as error:
            self._finish(job, "failed", error)
        except Exception as error:  # a bug: report it, keep serving
            log.exception("job %s failed", job.id)
            self._finish(job, "failed", DawBridgeError(f"Internal error: {error!r}", "Report it."))
        else:
            job.progress = 1.0
            self._finish(job, "done")

    def _source(self, job: Job) -> Path:
        source = job.request["source"]
        if "upload" in source:
            return self.uploads.path(source["upload"])
        return Path(source["path"])

    def _release_upload(self, job: Job) -> None:
        source = job.request.get("source")
        if isinstance(source, dict) and isinstance(source.get("upload"), str):
            self.uploads.release(source["upload"])

    def undo_delivery(self, job: Job) -> None:
        """Clear what an interrupted ``job`` left: its staged delivery."""
        folder = self._folder(job)
        if folder is not None:
            try:
                undo(staging_folder(folder, job.id))
            except OSError as error:
                log.warning("could not clear job %s's staging in %s: %s", job.id, folder, error)

    def _folder(self, job: Job) -> Path | None:
        """Where ``job`` delivers its files (an apply job: its source job's folder; a
        remote job: its own private area, made here)."""
        request = job.request
        if request.get("type") == "apply":
            source = self.store.get(str(request.get("job", "")))
            folder = ((source and source.result) or {}).get("folder")
        elif is_remote(request) and self.outbox is not None:
            return self.outbox.folder(job.id)
        else:
            folder = request.get("out_dir")
        return Path(folder) if isinstance(folder, str) and folder else None

    def _delivery(self, job: Job, folder: Path) -> Delivery:
        """A delivery into ``folder``, after clearing what cut-short jobs left there."""

        def finished(tag: str) -> bool:
            other = self.store.get(tag)
            return other is not None and other.final

        sweep(folder, finished)
        return Delivery(folder, job.id)

    def _separate_file(self, job: Job, path: Path) -> dict:
        started = time.perf_counter()
        request = job.request
        options = request.get("options", {})
        source = request["source"]
        start, duration = source.get("start", 0.0), source.get("duration")
        check_kinds(options.get("midi") or [])  # before any inference
        preset = load_preset(options["preset"]) if options.get("preset") else None
        check_tail(options.get("tail"))
        share = 0.9 if preset else 0.97  # of the progress bar, for the separation
        span = info = None
        fingerprint = _fingerprint(path, start, duration)
        known = self._spans.get(fingerprint)
        if known is None:
            info = open_span(path, start, duration)
            if _streamed(info.frames, info.samplerate):
                known = (span_sha256(info), info.samplerate, info.frames)
            else:
                span = read_span(path, start, duration)
                known = (span.content_sha256(), span.samplerate, span.frames)
            self._remember(fingerprint, known)
        model = options.get("model") or self.pool.default
        settings = {
            "two_stems": options.get("two_stems"),
            "format": options.get("format", "float32"),
            "sum_to_input": options.get("sum_to_input", True),
            "shifts": options.get("shifts", 0),
        }
        # An ensemble name stands for its file's content, which the owner may edit.
        key = cache_key(known[0], expand_ensemble(model), settings)
        folder = self._folder(job)
        if folder is None:  # a remote job on a worker without an outbox: a bug
            raise DawBridgeError("This job has no output folder.", "Report it.")
        remote = is_remote(request)
        # A remote job's area is fresh: "overwrite" is for the client's own folder.
        overwrite = bool(options.get("overwrite", False)) and not remote
        kinds = options.get("midi") or []
        keep = options.get("keep") or []
        for kind in kinds:  # MIDI that may not be written fails before the separation
            ensure_writable(folder / f"{kind}.mid", overwrite)
        entry = self.cache.lookup(key)
        cached = entry is not None
        drum_kit = self.pool.get(options["drum_kit"]) if options.get("drum_kit") else None
        if entry is not None:
            names = [path.stem for path in entry.glob("*.wav")]
        else:
            separator = self.pool.get(model, settings["shifts"])
            names = list(separator.sources)
        check_keep(keep, names, settings["two_stems"])  # before any inference
        if drum_kit is not None:
            # The stems delivered (a cache entry holds those): --two-stems drums has drums.
            check_drum_kit(
                names if entry is not None else stem_names(separator, settings["two_stems"]), keep
            )
        if entry is None:
            # Long spans go from the file to the stems in blocks: memory stays bounded.
            if _streamed(known[2], known[1]) and can_stream(separator):
                split, audio = stream_split, info or open_span(path, start, duration)
            else:
                split, audio = split_span, span or read_span(path, start, duration)
            stem_targets(separator, folder, settings["two_stems"], overwrite)  # fail early
            staging = self.cache.staging()
            try:
                split(
                    audio,
                    separator,
                    staging,
                    two_stems=settings["two_stems"],
                    sample_format=settings["format"],
                    sum_to_input=settings["sum_to_input"],
                    progress=lambda fraction: setattr(job, "progress", share * fraction),
                    should_cancel=job.cancel.is_set,
                )
                entry = self.cache.commit(staging, key)
            except BaseException as error:
                full = is_out_of_space(error, staging)  # before its files are removed
                shutil.rmtree(staging, ignore_errors=True)
                if full:
                    raise StateFolderError(
                        f"The drive holding the server's stem cache {self.cache.root} is full.",
                        "Free some space on that drive, or start the server with --state-dir "
                        "on another drive (or a smaller --cache-size-mb).",
                    ) from error
                raise
        with self._delivery(job, folder) as delivery:
            stems = _stems(self.cache.hand_out(entry, delivery.path))
            if remote:
                _private_manifest(delivery.path(MANIFEST_NAME), self._shown_name(source))
            pieces = {}
            if drum_kit is not None:
                pieces = split_drums(
                    stems[DRUMS],
                    drum_kit,
                    delivery.path(DRUMS),
                    settings["format"],
                    should_cancel=job.cancel.is_set,
                )
            # Drums MIDI takes kick and snare from their own pieces where the kit gave them.
            midi = midi_for_stems(stems, kinds, pieces=pieces)
            stems = keep_stems(stems, keep, settings["format"])
            processed = self._apply(job, preset, stems, delivery, share) if preset else None
            delivery.publish(overwrite, replace_in=[preset.name] if preset else [])
        self.cache.handed_out(entry)
        result = {
            "midi": _finals(delivery, midi, remote),
            "folder": "" if remote else str(folder),
            "stems": _finals(delivery, stems, remote),
            "manifest": "manifest.json" if remote else str(folder / "manifest.json"),
            "cached": cached,
            "samplerate": known[1],
            "frames": known[2],
        }
        if preset is not None:
            result.update(preset=preset.name, processed=_finals(delivery, processed, remote))
        if pieces:
            result["drum_kit"] = _finals(delivery, pieces, remote)
        if remote and self.outbox is not None:
            # Paths above are relative to the area; the client fetches these files.
            result["files"] = self.outbox.listing(job.id)
        result["seconds"] = round(time.perf_counter() - started, 4)
        return result

    def _apply(
        self, job: Job, preset: Preset, stems: dict[str, Path], delivery: Delivery, start: float
    ) -> dict[str, Path]:
        """Process the raw ``stems`` with ``preset`` into the delivery's preset subfolder."""
        return apply_preset(
            preset,
            stems,
            processed_folder(delivery.staging, preset),
            tail=job.request.get("tail") or job.request.get("options", {}).get("tail"),
            progress=lambda f: setattr(job, "progress", start + (0.99 - start) * f),
            should_cancel=job.cancel.is_set,
        )

    def _reapply(self, job: Job) -> dict:
        """A preset on a finished job's raw stems: no separation, raw stems untouched."""
        started = time.perf_counter()
        source = self.store.get(job.request["job"])
        if source is None or not (source.result or {}).get("stems"):
            raise DawBridgeError(
                f"Job {job.request['job']} has no stems.", "Split the clip again, then apply."
            )
        if is_remote(source.request):
            raise remote_apply_error(source.id)
        preset = load_preset(job.request["preset"])
        check_tail(job.request.get("tail"))
        result = {**source.result, "source_job": source.id}
        stems = {name: Path(path) for name, path in result["stems"].items()}
        with self._delivery(job, Path(result["folder"])) as delivery:
            processed = self._apply(job, preset, stems, delivery, 0.0)
            delivery.publish(replace_in=[preset.name])
        result.update(preset=preset.name, processed=_finals(delivery, processed))
        result["seconds"] = round(time.perf_counter() - started, 4)
        return result

    def _shown_name(self, source: dict) -> str:
        """The input's name a remote job's manifest shows: never a path on this machine."""
        if "upload" in source:
            return self.uploads.name(source["upload"])
        return Path(source.get("path", "")).name  # the owner's own file

    def _remember(self, fingerprint: tuple, known: tuple[str, int, int]) -> None:
        self._spans[fingerprint] = known
        while len(self._spans) > _REMEMBERED_SPANS:
            self._spans.pop(next(iter(self._spans)))


#: Spans longer than this (seconds) are hashed and separated from the file in blocks.
STREAM_SECONDS_ENV = "DAW_BRIDGE_STREAM_SECONDS"
_STREAM_SECONDS_DEFAULT = 300.0


def _streamed(frames: int, samplerate: int) -> bool:
    limit = float(os.environ.get(STREAM_SECONDS_ENV) or _STREAM_SECONDS_DEFAULT)
    return frames > limit * samplerate


def _fingerprint(path: Path, start: float, duration: float | None) -> tuple:
    """Identifies an unchanged file span without decoding it (size and mtime in ns)."""
    stat = path.stat() if path.is_file() else None
    if stat is None:
        return (str(path), None)  # missing: never remembered, read_span reports it
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, start, duration)


def _private_manifest(manifest: Path, name: str) -> None:
    """What a remote job's manifest may show: its sender's file name, not where the
    server kept it (nor the path of whoever separated the same audio first, whose
    manifest the cache kept), nor the cache's own records."""
    if not manifest.is_file():
        return
    document = json.loads(manifest.read_text(encoding="utf-8"))
    facts = document.get("input")
    if isinstance(facts, dict):
        facts["path"] = name
        facts.pop("file_modified", None)
    document.pop("sha256", None)
    # A new file replaces the name: the manifest linked from the cache stays as it was.
    with atomic_output(manifest, overwrite=True) as temporary:
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _stems(files: list[Path]) -> dict[str, Path]:
    return {path.stem: path for path in files if path.suffix == ".wav"}


def _finals(delivery: Delivery, staged: dict[str, Path], relative: bool = False) -> dict[str, str]:
    """Final paths; a remote job's relative to its area (the client's folder mirrors it)."""
    if relative:
        root = delivery.staging
        return {name: path.relative_to(root).as_posix() for name, path in staged.items()}
    return {name: str(delivery.final(path)) for name, path in staged.items()}


def is_remote(request: dict) -> bool:
    """A split whose files stay in the server's private area until the client fetches them."""
    return request.get("type") == "submit" and "out_dir" not in request


def remote_apply_error(job_id: str) -> DawBridgeError:
    return DawBridgeError(
        f"Job {job_id} sent its stems back as bytes: a preset can be re-applied only to "
        "stems in a folder on the server's machine.",
        "Split the file again with the preset (--preset NAME).",
    )
