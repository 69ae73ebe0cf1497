"""Applying a preset to raw stems: streamed in blocks, tails kept, written beside them.

Each stem is read, processed and written one block at a time, so memory stays
bounded however long the stem is. Plugins keep their state across blocks, so
reverb and delay tails carry over block boundaries; a plugin with latency
returns fewer frames at first, and is fed silence at the end until its output
lines up with the input again. With ``tail="extend"`` the stem then grows by
the effect tail (until it stays below -90 dBFS); with ``"cut"`` it keeps its
exact length and lines up sample for sample with the raw stem.

Stems are processed in parallel threads (pedalboard releases the GIL), each
into a temporary file; only when all succeeded are they renamed into place,
so a failed or cancelled run leaves the previous outputs as they were.
Processed stems are 32-bit float WAV, since effects may push peaks past full
scale; a stem the preset leaves alone is a byte-for-byte copy of the raw one.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from daw_bridge.errors import AudioInputError, CancelledError
from daw_bridge.files import publish, temporary_sibling
from daw_bridge.presets.loudness import LoudnessMeter
from daw_bridge.presets.plugins import build
from daw_bridge.presets.schema import TAILS, Preset, PresetError, StemSettings

log = logging.getLogger(__name__)

BLOCK_FRAMES = 65536
#: A tail ends once the output stayed below this for ``_TAIL_WINDOW_SECONDS``.
TAIL_THRESHOLD = 10 ** (-90 / 20)
MAX_TAIL_SECONDS = 30.0
_TAIL_WINDOW_SECONDS = 1.0
PRESET_COPY = "preset.toml"


def processed_folder(stems_folder: Path, preset: Preset) -> Path:
    """Where a preset's outputs go: a subfolder named after it, beside the raw stems."""
    return Path(stems_folder) / preset.name


def check_tail(tail: str | None) -> None:
    """Refuse an unknown tail mode early (``None`` means the preset's own)."""
    if tail is not None and tail not in TAILS:
        raise PresetError(f"Unknown tail mode {tail!r}.", f"Use one of: {', '.join(TAILS)}.")


def apply_preset(
    preset: Preset,
    stems: Mapping[str, Path],
    out_dir: Path,
    *,
    tail: str | None = None,
    progress: Callable[[float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    workers: int | None = None,
    block_frames: int = BLOCK_FRAMES,
) -> dict[str, Path]:
    """Process every stem of ``stems`` into ``out_dir/<stem>.wav``; return those paths.

    Earlier outputs of the same names are replaced; raw stems are only read,
    and writing over one of them is refused.
    """
    check_tail(tail)
    tail = tail or preset.tail
    out_dir = Path(out_dir)
    targets = {name: out_dir / f"{name}.wav" for name in stems}
    raw = {Path(path).resolve() for path in stems.values()}
    for name, path in stems.items():
        if not Path(path).is_file():
            raise AudioInputError(
                f"The raw {name} stem {path} is missing.",
                "Split the song again (the raw stems were moved or deleted).",
            )
    if any(target.resolve() in raw for target in targets.values()):
        raise PresetError(
            f"Processed stems would overwrite the raw stems in {out_dir}.",
            "Write processed stems to their own folder (the preset's name beside the stems).",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = _Progress(progress, {name: _frames(path) for name, path in stems.items()})
    cancelled = threading.Event()

    def check() -> None:
        if cancelled.is_set() or (should_cancel is not None and should_cancel()):
            cancelled.set()
            raise CancelledError()

    temporaries = {name: temporary_sibling(target) for name, target in targets.items()}
    copy = temporary_sibling(out_dir / PRESET_COPY)
    try:
        count = min(len(stems), workers or os.cpu_count() or 1) or 1
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="preset") as pool:
            futures = [
                pool.submit(
                    _process_stem,
                    preset,
                    name,
                    Path(stems[name]),
                    temporaries[name],
                    tail,
                    block_frames,
                    check,
                    tracker.advance,
                )
                for name in sorted(stems, key=lambda name: -_cost(preset.settings_for(name)))
            ]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                cancelled.set()  # the other stems stop at their next block
                raise
        for name, target in targets.items():
            publish(temporaries[name], target, overwrite=True)
        if preset.source is not None:  # what was applied, for the record
            shutil.copyfile(preset.source, copy)
            publish(copy, out_dir / PRESET_COPY, overwrite=True)
    finally:
        for temporary in [*temporaries.values(), copy]:
            temporary.unlink(missing_ok=True)
    tracker.finish()
    return targets


def _cost(settings: StemSettings) -> int:
    """Rough work for a stem, so the busiest start first and the threads finish together."""
    if settings.mute:
        return 0
    return 1 + len(settings.chain) + (3 if settings.loudness_lufs is not None else 0)


def _frames(path: Path) -> int:
    import soundfile

    try:
        return int(soundfile.info(str(path)).frames)
    except (ValueError, RuntimeError, OSError) as error:
        raise AudioInputError(
            f"Cannot read the raw stem {path} ({error}).", "Split the song again."
        ) from error


class _Progress:
    """Fraction of all stems' frames done, shared by the worker threads."""

    def __init__(self, report: Callable[[float], None] | None, frames: dict[str, int]) -> None:
        self.report = report
        self.total = max(1, sum(frames.values()))
        self.done = 0
        self.lock = threading.Lock()

    def advance(self, frames: int) -> None:
        with self.lock:
            self.done += frames
            fraction = min(1.0, self.done / self.total)
        if self.report is not None:
            self.report(0.99 * fraction)

    def finish(self) -> None:
        if self.report is not None:
            self.report(1.0)


def _process_stem(
    preset: Preset,
    name: str,
    raw: Path,
    temporary: Path,
    tail: str,
    block_frames: int,
    check: Callable[[], None],
    advance: Callable[[int], None],
) -> None:
    import soundfile

    settings = preset.settings_for(name)
    if settings.passthrough and not settings.mute:
        check()
        shutil.copyfile(raw, temporary)  # left exactly as it is: a copy is the fastest way
        advance(_frames(raw))
        return
    # Read by libsndfile, as the split read its input: integer stems as x / 2**(bits - 1).
    with soundfile.SoundFile(str(raw)) as source:
        samplerate, channels, frames = int(source.samplerate), int(source.channels), source.frames
        blocks = _blocks(source, block_frames, check, advance)
        if settings.mute:
            processed: Iterator[np.ndarray] = (np.zeros_like(block) for block in blocks)
        elif settings.chain:
            stream = _ChainStream(preset, settings, samplerate, channels, block_frames, check)
            processed = stream.process(blocks, frames, tail)
        else:
            processed = blocks
        if settings.loudness_lufs is None or settings.mute:
            gain = np.float32(10 ** (settings.gain_db / 20))
            _write(temporary, samplerate, channels, processed, gain)
            return
        # Loudness needs the whole processed stem: write it, measure meanwhile, then scale.
        scratch = temporary_sibling(temporary)
        try:
            meter = LoudnessMeter(samplerate, channels)
            _write(scratch, samplerate, channels, _metered(processed, meter), np.float32(1))
            gain = _loudness_gain(meter.integrated(), settings)
            with soundfile.SoundFile(str(scratch)) as again:
                rescaled = _blocks(again, block_frames, check, lambda _: None)
                _write(temporary, samplerate, channels, rescaled, gain)
        finally:
            scratch.unlink(missing_ok=True)


def _loudness_gain(measured: float, settings: StemSettings) -> np.float32:
    gain_db = settings.gain_db
    if math.isfinite(measured) and settings.loudness_lufs is not None:
        gain_db += settings.loudness_lufs - measured
    return np.float32(10 ** (gain_db / 20))


def _blocks(
    source, block_frames: int, check: Callable[[], None], advance: Callable[[int], None]
) -> Iterator[np.ndarray]:
    while source.tell() < source.frames:
        check()
        count = min(block_frames, source.frames - source.tell())
        block = source.read(count, dtype="float32", always_2d=True).T
        if block.shape[1] == 0:
            break
        advance(block.shape[1])
        yield np.ascontiguousarray(block)


def _metered(blocks: Iterator[np.ndarray], meter: LoudnessMeter) -> Iterator[np.ndarray]:
    for block in blocks:
        meter.add(block)
        yield block


def _write(
    path: Path, samplerate: int, channels: int, blocks: Iterator[np.ndarray], gain: np.float32
) -> None:
    from pedalboard.io import AudioFile

    with AudioFile(str(path), "w", samplerate, channels, bit_depth=32) as out:
        for block in blocks:
            out.write(block * gain if gain != 1 else block)


class _ChainStream:
    """One stem through its chain, plugin state carried from block to block."""

    def __init__(
        self,
        preset: Preset,
        settings: StemSettings,
        samplerate: int,
        channels: int,
        block_frames: int,
        check: Callable[[], None],
    ) -> None:
        from pedalboard import Pedalboard

        self.board = Pedalboard([build(step, samplerate, preset.label) for step in settings.chain])
        self.preset, self.samplerate, self.check = preset, samplerate, check
        self.silence = np.zeros((channels, block_frames), dtype=np.float32)
        delays = [
            s.parameters.get("delay_seconds", 0.5) for s in settings.chain if s.plugin == "Delay"
        ]
        # Silence between echoes is not the end of the tail.
        self.window = round((_TAIL_WINDOW_SECONDS + sum(delays)) * samplerate)

    def _run(self, block: np.ndarray) -> np.ndarray:
        out = self.board(block, self.samplerate, reset=False)
        if not np.isfinite(out).all():
            raise PresetError(
                f"{self.preset.label}: a plugin produced NaN or infinite samples.",
                "Lower extreme settings (feedback, resonance, gain) or remove the plugin.",
            )
        return out

    def process(self, blocks: Iterator[np.ndarray], frames: int, tail: str) -> Iterator[np.ndarray]:
        """The chain's output: exactly ``frames`` frames, then the tail when extending."""
        written = 0
        for block in blocks:
            out = self._run(block)
            written += out.shape[1]
            yield out
        leftover = None
        while written < frames:  # a plugin with latency still holds the end of the input
            self.check()
            out = self._run(self.silence)
            keep = min(out.shape[1], frames - written)
            written += keep
            yield out[:, :keep]
            leftover = out[:, keep:]
        if tail == "extend":
            yield from self._tail(leftover)

    def _tail(self, first: np.ndarray | None) -> Iterator[np.ndarray]:
        """Feed silence; keep the output up to its last sample above the threshold."""
        limit = round(MAX_TAIL_SECONDS * self.samplerate)
        held: list[np.ndarray] = []  # output after the last loud sample: kept only if more comes
        quiet = produced = 0
        while produced < limit and quiet < self.window:
            self.check()
            out = first if first is not None and first.shape[1] else self._run(self.silence)
            first = None
            out = out[:, : limit - produced]
            produced += out.shape[1]
            loud = np.flatnonzero(np.max(np.abs(out), axis=0) > TAIL_THRESHOLD)
            if loud.size:
                end = int(loud[-1]) + 1
                yield from held
                yield out[:, :end]
                held = [out[:, end:]]
                quiet = out.shape[1] - end
            else:
                held.append(out)
                quiet += out.shape[1]
