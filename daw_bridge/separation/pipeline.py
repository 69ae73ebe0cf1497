"""From a span of an audio file to stem files on disk, plus a manifest.

The pipeline owns what every separator shares: reading and validating the span,
resampling to the separator's rate and back to the source's exact length, the
sum-to-input guarantee, the two-stem mode, atomic writing and the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile

from daw_bridge import __version__
from daw_bridge.audio.io import (
    AudioSpan,
    SampleFormat,
    SpanInfo,
    iter_span,
    open_span,
    open_writer,
    read_span,
    take_frames,
    write_audio,
)
from daw_bridge.audio.resample import resample
from daw_bridge.errors import CancelledError, InvalidOptionError
from daw_bridge.files import atomic_output, check_output_folder, ensure_writable
from daw_bridge.separation.base import CancelCheck, ProgressCallback, Separator

#: The stem that receives what the model left out, so the stems sum to the mix.
RESIDUAL_STEM = "other"
MANIFEST_NAME = "manifest.json"

_READ_SHARE, _WRITE_SHARE = 0.03, 0.05


@dataclass
class SplitResult:
    """What a split produced: stem files, the manifest, and the audio's shape."""

    folder: Path
    stems: dict[str, Path]
    manifest: Path
    samplerate: int
    frames: int
    warnings: list[str] = field(default_factory=list)


def stem_names(separator: Separator, two_stems: str | None = None) -> list[str]:
    """The stems a split writes: the model's, or ``X`` and ``no_X`` for two stems."""
    sources = list(separator.sources)
    if two_stems is None:
        return sources
    if two_stems not in sources:
        raise InvalidOptionError(
            f"--two-stems {two_stems!r} is not a stem of model {separator.name}.",
            f"Use one of: {', '.join(sources)}.",
        )
    return [two_stems, f"no_{two_stems}"]


def stem_targets(
    separator: Separator, folder: Path, two_stems: str | None, overwrite: bool
) -> dict[str, Path]:
    """Stem files by name; fails before minutes of inference if one may not be written."""
    targets = {name: folder / f"{name}.wav" for name in stem_names(separator, two_stems)}
    check_output_folder(folder)
    for target in [*targets.values(), folder / MANIFEST_NAME]:
        ensure_writable(target, overwrite)
    return targets


def _finish_stems(
    stems: dict[str, np.ndarray], mix: np.ndarray, two_stems: str | None, sum_to_input: bool
) -> dict[str, np.ndarray]:
    """Two stems as ``X`` and ``mix - X``; otherwise the residual goes to ``other``."""
    if two_stems is not None:
        kept = stems[two_stems]
        # The complement is defined as mix minus the stem: exact by construction.
        return {two_stems: kept, f"no_{two_stems}": (mix - kept).astype(np.float32)}
    if sum_to_input:
        target = RESIDUAL_STEM if RESIDUAL_STEM in stems else list(stems)[-1]
        residual = mix - np.sum(list(stems.values()), axis=0, dtype=np.float64)
        stems[target] = (stems[target] + residual).astype(np.float32)
    return stems


def separate_span(
    separator: Separator,
    span: AudioSpan,
    *,
    two_stems: str | None = None,
    sum_to_input: bool = True,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, np.ndarray]:
    """Separate ``span`` at its own rate; every stem has exactly ``span.frames`` frames."""
    stem_names(separator, two_stems)  # a bad --two-stems fails before inference
    sources = list(separator.sources)
    mix = span.samples
    model_input = resample(mix, span.samplerate, separator.samplerate)
    estimates = separator.separate(model_input, progress, should_cancel)
    stems = {
        name: resample(estimates[i], separator.samplerate, span.samplerate, length=span.frames)
        for i, name in enumerate(sources)
    }
    return _finish_stems(stems, mix, two_stems, sum_to_input)


def output_folder(out_dir: Path, model_name: str, span: AudioSpan | SpanInfo) -> Path:
    """``OUT/<model>/<track>`` as demucs does; a span adds its start and end to the name."""
    track = span.source.stem
    if not (span.start_frame == 0 and span.frames == span.file_frames):
        start = span.start_frame / span.samplerate
        end = (span.start_frame + span.frames) / span.samplerate
        track = f"{track} [{start:.3f}-{end:.3f}s]"
    model_folder = re.sub(r"[^\w.-]+", "_", model_name)
    return Path(out_dir) / model_folder / track


def split_file(
    source: Path | str,
    separator: Separator,
    out_dir: Path | str,
    *,
    start: float = 0.0,
    duration: float | None = None,
    into: Path | None = None,
    **options,
) -> SplitResult:
    """Split ``[start, start + duration)`` of ``source`` into ``out_dir/<model>/<track>``
    (or straight into the folder ``into``, e.g. a delivery's staging folder).

    ``options`` are those of :func:`split_span`. Separators that can stream
    (Demucs models) read the file and write the stems block by block, so memory
    stays bounded whatever the file's length; others get the span in memory.
    """
    if can_stream(separator):
        info = open_span(source, start, duration)
        folder = into or output_folder(Path(out_dir), separator.name, info)
        return stream_split(info, separator, folder, **options)
    span = read_span(source, start, duration)
    folder = into or output_folder(Path(out_dir), separator.name, span)
    return split_span(span, separator, folder, **options)


def can_stream(separator: Separator) -> bool:
    """Whether ``separator`` takes its mix in blocks (:func:`stream_split`)."""
    return hasattr(separator, "separate_stream")


def split_span(
    span: AudioSpan,
    separator: Separator,
    folder: Path,
    *,
    two_stems: str | None = None,
    sample_format: SampleFormat = "float32",
    sum_to_input: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> SplitResult:
    """Separate ``span`` and write its stems and manifest into ``folder``."""
    report = progress or (lambda _fraction: None)
    targets = stem_targets(separator, folder, two_stems, overwrite)
    report(_READ_SHARE)

    started = time.perf_counter()
    stems = separate_span(
        separator,
        span,
        two_stems=two_stems,
        sum_to_input=sum_to_input,
        progress=_scaled(report, _READ_SHARE, 1.0 - _WRITE_SHARE),
        should_cancel=should_cancel,
    )
    elapsed = time.perf_counter() - started
    for name, target in targets.items():
        write_audio(target, stems[name], span.samplerate, sample_format, overwrite)
    document = _manifest(separator, span, targets, sample_format, sum_to_input, two_stems, elapsed)
    manifest = _write_manifest(folder, document, overwrite)
    report(1.0)
    return SplitResult(folder, targets, manifest, span.samplerate, span.frames)


class _Resampler:
    """Streaming soxr (same filter as :func:`resample`) on ``(channels, n)`` blocks."""

    def __init__(self, from_rate: int, to_rate: int, channels: int) -> None:
        self._stream = None
        if from_rate != to_rate:
            import soxr

            self._stream = soxr.ResampleStream(
                from_rate, to_rate, channels, dtype="float32", quality="VHQ"
            )

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        out = self._stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32), last)
        return np.ascontiguousarray(out.T)


def _mix_statistics(
    info: SpanInfo, model_rate: int, should_cancel: CancelCheck | None
) -> tuple[float, float, int, hashlib._Hash]:
    """First pass: mean, std and length of the mono sum at the model's rate, as
    :class:`DemucsSeparator` computes them, and the span hash over channel 0."""
    digest = hashlib.sha256(str(info.samplerate).encode())
    to_model = _Resampler(info.samplerate, model_rate, 1)
    total = total_sq = 0.0
    count = 0

    def add(mono: np.ndarray) -> None:
        nonlocal total, total_sq, count
        values = mono.astype(np.float64)
        total += float(values.sum())
        total_sq += float(np.dot(values, values))
        count += values.size

    for block in iter_span(info):
        if should_cancel is not None and should_cancel():
            raise CancelledError()
        digest.update(block[0].tobytes())
        add(to_model(block.mean(axis=0, dtype=np.float32)[None])[0])
    add(to_model(np.zeros((1, 0), np.float32), last=True)[0])
    mean = total / count
    variance = max(0.0, (total_sq - count * mean * mean) / max(1, count - 1))
    return mean, float(np.sqrt(variance)), count, digest


def stream_split(
    info: SpanInfo,
    separator: Separator,
    folder: Path,
    *,
    two_stems: str | None = None,
    sample_format: SampleFormat = "float32",
    sum_to_input: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> SplitResult:
    """:func:`split_span` straight from a file, in bounded memory.

    Two passes over the span (from :func:`~daw_bridge.audio.io.open_span`):
    the first measures the mix level the model is normalised by, the second
    separates block by block (the engine's overlap-add only needs neighbouring
    segments) and appends each finished block to the stem files, which appear
    under their names only when complete. Same stems as :func:`split_span`
    (float rounding aside), with a memory use independent of the length.
    """
    sources = list(separator.sources)
    report = progress or (lambda _fraction: None)
    targets = stem_targets(separator, folder, two_stems, overwrite)
    started = time.perf_counter()
    model_rate = separator.samplerate
    mean, std, model_frames, digest = _mix_statistics(info, model_rate, should_cancel)
    report(_READ_SHARE)

    originals: deque[np.ndarray] = deque()  # source-rate mix blocks not yet written

    def model_blocks() -> Iterator[np.ndarray]:
        to_model = _Resampler(info.samplerate, model_rate, info.channels)
        for block in iter_span(info):
            if info.channels > 1:
                digest.update(block[1].tobytes())
            originals.append(block)
            yield to_model(block)
        yield to_model(np.zeros((info.channels, 0), np.float32), last=True)

    stems_in = separator.separate_stream(
        model_blocks(),
        channels=info.channels,
        mean=mean,
        std=std,
        frames_hint=model_frames,
        progress=_scaled(report, _READ_SHARE, 1.0 - _WRITE_SHARE),
        should_cancel=should_cancel,
    )
    count = len(sources)
    back = _Resampler(model_rate, info.samplerate, count * info.channels)
    with contextlib.ExitStack() as stack:
        writers = {
            name: stack.enter_context(
                open_writer(target, info.samplerate, info.channels, sample_format, overwrite)
            )
            for name, target in targets.items()
        }
        written = 0

        def write(estimates: np.ndarray) -> None:
            nonlocal written
            frames = min(estimates.shape[-1], info.frames - written)
            if frames <= 0:
                return
            estimates = estimates[..., :frames]
            mix = take_frames(originals, frames)
            stems = _finish_stems(
                dict(zip(sources, estimates, strict=True)), mix, two_stems, sum_to_input
            )
            for name, writer in writers.items():
                writer.write(stems[name])
            written += frames

        def resampled_back(estimates: np.ndarray, last: bool = False) -> np.ndarray:
            flat = estimates.reshape(count * info.channels, -1)
            return back(flat, last).reshape(count, info.channels, -1)

        for estimates in stems_in:
            write(resampled_back(estimates))
        write(resampled_back(np.zeros((count, info.channels, 0), np.float32), last=True))
        if written < info.frames:  # as resample(..., length=frames) pads
            write(np.zeros((count, info.channels, info.frames - written), np.float32))
    elapsed = time.perf_counter() - started
    span_sha256 = digest.hexdigest()
    document = _manifest(
        separator, info, targets, sample_format, sum_to_input, two_stems, elapsed, span_sha256
    )
    manifest = _write_manifest(folder, document, overwrite)
    report(1.0)
    return SplitResult(folder, targets, manifest, info.samplerate, info.frames)


def _write_manifest(folder: Path, document: dict, overwrite: bool) -> Path:
    manifest = folder / MANIFEST_NAME
    with atomic_output(manifest, overwrite) as temporary:
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return manifest


def _scaled(report: Callable[[float], None], low: float, high: float) -> ProgressCallback:
    return lambda fraction: report(low + (high - low) * fraction)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _file_facts(path: Path) -> dict:
    """Size and modification time: whether the source changed since, at no cost.

    The file is not hashed, which would read all of a two-hour file to split
    ten seconds of it; ``span_sha256`` (the decoded span) identifies the audio.
    """
    stat = path.stat()
    modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
    return {"file_size": stat.st_size, "file_modified": modified.isoformat()}


def _manifest(
    separator: Separator,
    span: AudioSpan | SpanInfo,
    targets: dict[str, Path],
    sample_format: str,
    sum_to_input: bool,
    two_stems: str | None,
    elapsed: float,
    span_sha256: str | None = None,
) -> dict:
    # A two-stem split sums exactly by construction: no_X is the mix minus X.
    residual = f"no_{two_stems}" if two_stems else (RESIDUAL_STEM if sum_to_input else None)
    return {
        "format": "daw-bridge-stems/1",
        "model": separator.name,
        "versions": {
            "daw-bridge": __version__,
            "python": platform.python_version(),
            **{
                name: _version(name)
                for name in ("torch", "demucs", "pedalboard", "numpy", "soundfile")
            },
            "libsndfile": soundfile.__libsndfile_version__,  # the decoder behind span_sha256
        },
        "input": {
            "path": str(span.source.resolve()),
            **_file_facts(span.source),
            "span_sha256": span_sha256 or span.content_sha256(),
            "start_frame": span.start_frame,
            "start_seconds": span.start_frame / span.samplerate,
            "file_frames": span.file_frames,
        },
        "samplerate": span.samplerate,
        "channels": span.channels,
        "frames": span.frames,
        "seconds": span.frames / span.samplerate,
        "sample_format": sample_format,
        "sum_to_input": residual is not None,
        "residual_stem": residual,
        "stems": {name: path.name for name, path in targets.items()},
        "separation_seconds": round(elapsed, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
