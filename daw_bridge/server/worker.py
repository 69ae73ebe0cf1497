"""The inference worker: runs queued jobs one at a time on the server's device."""

from __future__ import annotations

import base64
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from daw_bridge.audio.io import open_span, read_span, span_sha256
from daw_bridge.errors import CancelledError, DawBridgeError
from daw_bridge.files import ensure_writable, publish, temporary_sibling
from daw_bridge.midi.convert import check_kinds, midi_for_stems
from daw_bridge.presets.apply import apply_preset, check_tail, processed_folder
from daw_bridge.presets.library import load as load_preset
from daw_bridge.presets.schema import Preset
from daw_bridge.separation.pipeline import (
    can_stream,
    split_span,
    stem_targets,
    stream_split,
)
from daw_bridge.server.cache import StemCache, cache_key
from daw_bridge.server.jobs import Job, JobStore
from daw_bridge.server.models import ModelPool

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
        name: str = "daw-bridge-worker",
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs, self.pool, self.cache, self.store, self.notify = jobs, pool, cache, store, notify
        self.current: Job | None = None
        # Content hash of recently seen spans: a repeated click skips decoding and hashing.
        self._spans: dict[tuple, tuple[str, int, int]] = {}

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if job.cancel.is_set() or job.final:
                continue
            self.current = job
            self._run(job)
            self.current = None

    def _finish(self, job: Job, state: str, error: DawBridgeError | None = None) -> None:
        if error is not None:  # before the state: the server may read the job at any moment
            job.error = {"problem": error.problem, "fix": error.fix or ""}
        job.state = state
        self.store.save(job)
        self.notify(job)

    def _run(self, job: Job) -> None:
        job.state = "running"
        self.store.save(job)
        self.notify(job)
        try:
            if job.request["type"] == "apply":
                job.result = self._reapply(job)
            else:
                job.result = self._separate(job)
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
        if "path" in source:
            return Path(source["path"])
        upload = self.store.root / f"{job.id}-{Path(source.get('name', 'audio.wav')).name}"
        try:
            upload.write_bytes(base64.b64decode(source["data"], validate=True))
        except ValueError as error:
            raise DawBridgeError(
                "The uploaded audio is not valid base64.", "Send the file again."
            ) from error
        return upload

    def _separate(self, job: Job) -> dict:
        source = job.request["source"]
        path = self._source(job)
        try:
            return self._separate_file(job, path)
        finally:
            if "data" in source:
                path.unlink(missing_ok=True)  # an upload is only kept for its job

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
        key = cache_key(known[0], model, settings)
        folder = Path(request["out_dir"])
        overwrite = bool(options.get("overwrite", False))
        entry = self.cache.lookup(key)
        cached = entry is not None
        if entry is None:
            separator = self.pool.get(model, settings["shifts"])
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
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            entry = self.cache.commit(staging, key)
        files = _deliver(entry, folder, overwrite)
        stems = {p.stem: str(p) for p in files if p.suffix == ".wav"}
        midi_files = midi_for_stems(stems, options.get("midi") or [], overwrite)
        midi = {kind: str(path) for kind, path in midi_files.items()}
        result = {
            "midi": midi,
            "folder": str(folder),
            "stems": stems,
            "manifest": str(folder / "manifest.json"),
            "cached": cached,
            "samplerate": known[1],
            "frames": known[2],
            "seconds": round(time.perf_counter() - started, 4),
        }
        if preset is not None:
            result.update(self._apply(job, preset, stems, folder, share))
            result["seconds"] = round(time.perf_counter() - started, 4)
        return result

    def _apply(
        self, job: Job, preset: Preset, stems: dict[str, str], folder: Path, start: float
    ) -> dict:
        """Process the raw ``stems`` with ``preset`` into their folder's preset subfolder."""
        processed = apply_preset(
            preset,
            {name: Path(path) for name, path in stems.items()},
            processed_folder(folder, preset),
            tail=job.request.get("tail") or job.request.get("options", {}).get("tail"),
            progress=lambda f: setattr(job, "progress", start + (0.99 - start) * f),
            should_cancel=job.cancel.is_set,
        )
        return {
            "preset": preset.name,
            "processed": {name: str(path) for name, path in processed.items()},
        }

    def _reapply(self, job: Job) -> dict:
        """A preset on a finished job's raw stems: no separation, raw stems untouched."""
        started = time.perf_counter()
        source = self.store.get(job.request["job"])
        if source is None or not (source.result or {}).get("stems"):
            raise DawBridgeError(
                f"Job {job.request['job']} has no stems.", "Split the clip again, then apply."
            )
        preset = load_preset(job.request["preset"])
        check_tail(job.request.get("tail"))
        result = {**source.result, "source_job": source.id}
        result.update(self._apply(job, preset, result["stems"], Path(result["folder"]), 0.0))
        result["seconds"] = round(time.perf_counter() - started, 4)
        return result

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


def _deliver(entry: Path, folder: Path, overwrite: bool) -> list[Path]:
    """Copy a cache entry into the user's folder: all or nothing, nothing clobbered."""
    sources = sorted(entry.iterdir())
    targets = [folder / source.name for source in sources]
    for target in targets:
        ensure_writable(target, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    for source, target in zip(sources, targets, strict=True):
        temporary = temporary_sibling(target)
        try:
            shutil.copyfile(source, temporary)
            publish(temporary, target, overwrite)
        finally:
            temporary.unlink(missing_ok=True)
    return targets
