"""From a span of an audio file to stem files on disk, plus a manifest.

The pipeline owns what every separator shares: reading and validating the span,
resampling to the separator's rate and back to the source's exact length, the
sum-to-input guarantee, the two-stem mode, atomic writing and the manifest.
"""

from __future__ import annotations

import json
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from daw_bridge import __version__
from daw_bridge.audio.io import AudioSpan, SampleFormat, file_sha256, read_span, write_audio
from daw_bridge.audio.resample import resample
from daw_bridge.errors import InvalidOptionError
from daw_bridge.files import atomic_output, ensure_writable
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
    sources = list(separator.sources)
    if two_stems is not None and two_stems not in sources:
        raise InvalidOptionError(
            f"--two-stems {two_stems!r} is not a stem of model {separator.name}.",
            f"Use one of: {', '.join(sources)}.",
        )
    mix = span.samples
    model_input = resample(mix, span.samplerate, separator.samplerate)
    estimates = separator.separate(model_input, progress, should_cancel)
    stems = {
        name: resample(estimates[i], separator.samplerate, span.samplerate, length=span.frames)
        for i, name in enumerate(sources)
    }
    if two_stems is not None:
        kept = stems[two_stems]
        # The complement is defined as mix minus the stem: exact by construction.
        return {two_stems: kept, f"no_{two_stems}": (mix - kept).astype(np.float32)}
    if sum_to_input:
        target = RESIDUAL_STEM if RESIDUAL_STEM in stems else sources[-1]
        residual = mix - np.sum(list(stems.values()), axis=0, dtype=np.float64)
        stems[target] = (stems[target] + residual).astype(np.float32)
    return stems


def output_folder(out_dir: Path, model_name: str, span: AudioSpan, whole_file: bool) -> Path:
    """``OUT/<model>/<track>`` as demucs does; a span adds its start and end to the name."""
    track = span.source.stem
    if not whole_file:
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
    **options,
) -> SplitResult:
    """Split ``[start, start + duration)`` of ``source`` into ``out_dir/<model>/<track>``.

    ``options`` are those of :func:`split_span`.
    """
    span = read_span(source, start, duration)
    whole = span.start_frame == 0 and span.frames == span.file_frames
    folder = output_folder(Path(out_dir), separator.name, span, whole)
    return split_span(span, separator, folder, **options)


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
    stem_names = [two_stems, f"no_{two_stems}"] if two_stems else list(separator.sources)
    targets = {name: folder / f"{name}.wav" for name in stem_names}
    for target in [*targets.values(), folder / MANIFEST_NAME]:
        ensure_writable(target, overwrite)  # fail before minutes of inference
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
    manifest = folder / MANIFEST_NAME
    document = _manifest(separator, span, targets, sample_format, sum_to_input, two_stems, elapsed)
    with atomic_output(manifest, overwrite) as temporary:
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    report(1.0)
    return SplitResult(folder, targets, manifest, span.samplerate, span.frames)


def _scaled(report: Callable[[float], None], low: float, high: float) -> ProgressCallback:
    return lambda fraction: report(low + (high - low) * fraction)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _manifest(
    separator: Separator,
    span: AudioSpan,
    targets: dict[str, Path],
    sample_format: str,
    sum_to_input: bool,
    two_stems: str | None,
    elapsed: float,
) -> dict:
    # A two-stem split sums exactly by construction: no_X is the mix minus X.
    residual = f"no_{two_stems}" if two_stems else (RESIDUAL_STEM if sum_to_input else None)
    return {
        "format": "daw-bridge-stems/1",
        "model": separator.name,
        "versions": {
            "daw-bridge": __version__,
            "python": platform.python_version(),
            **{name: _version(name) for name in ("torch", "demucs", "pedalboard", "numpy")},
        },
        "input": {
            "path": str(span.source.resolve()),
            "file_sha256": file_sha256(span.source),
            "span_sha256": span.content_sha256(),
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
