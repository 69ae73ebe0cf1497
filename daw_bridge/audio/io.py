"""Reading a span of the user's audio with libsndfile, writing stems with pedalboard.

Reading decodes as DAWs do, so that stems null against the file as REAPER plays
it: libsndfile (through ``soundfile``) decodes MP3 gaplessly, honouring the
encoder delay and padding in the LAME/Xing header, and reads integer PCM as
``x / 2**(bits - 1)`` (16 bit: ``x / 32768``). pedalboard's reader does
neither (it starts an MP3 1105 samples late and reads 16 bit as ``x / 32767``).
Reading also validates everything a DAW user can throw at us (missing or damaged
files, odd channel counts, NaN samples, spans past the end) and turns it into a
clear :class:`AudioInputError`. Writing is atomic and never replaces an existing
file unless asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from pedalboard.io import AudioFile

from daw_bridge.audio.formats import SAMPLE_FORMATS, SampleFormat
from daw_bridge.errors import AudioInputError, InvalidOptionError
from daw_bridge.files import atomic_output

log = logging.getLogger(__name__)

MIN_SAMPLERATE = 8_000
MAX_SAMPLERATE = 192_000
READABLE_SUFFIXES = (".wav", ".aif", ".aiff", ".bwf", ".flac", ".mp3", ".ogg")
#: Bytes per sample of the uncompressed codings whose length :func:`_check_not_truncated` checks.
_SAMPLE_WIDTH = {
    "PCM_S8": 1,
    "PCM_U8": 1,
    "ULAW": 1,
    "ALAW": 1,
    "PCM_16": 2,
    "PCM_24": 3,
    "PCM_32": 4,
    "FLOAT": 4,
    "DOUBLE": 8,
}
#: The WAV data size of a recording whose writer never came back to fill it in.
_UNKNOWN_SIZE = 0xFFFFFFFF

_BIT_DEPTH: dict[str, int] = {"float32": 32, "int24": 24, "int16": 16}


@dataclass(frozen=True)
class AudioSpan:
    """Samples ``(channels, frames)`` float32 read from ``source`` at ``start_frame``."""

    samples: np.ndarray
    samplerate: int
    source: Path
    start_frame: int
    file_frames: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    def content_sha256(self) -> str:
        """Hash of the decoded span (rate included): the identity of what was separated.

        It costs only the span, whatever the file's length: the rate as text,
        then each channel's float32 samples in turn.
        """
        digest = hashlib.sha256(str(self.samplerate).encode())
        digest.update(np.ascontiguousarray(self.samples, dtype=np.float32).tobytes())
        return digest.hexdigest()


def _open(path: Path) -> soundfile.SoundFile:
    if not path.exists():
        raise AudioInputError(
            f"Input file not found: {path}", "Check the path (quote it if it contains spaces)."
        )
    if not path.is_file():
        raise AudioInputError(f"{path} is not a file.", "Give the path of an audio file.")
    try:
        return soundfile.SoundFile(str(path))
    except (RuntimeError, ValueError, OSError) as error:
        raise AudioInputError(
            f"Cannot read {path} as audio ({error}).",
            f"Use a WAV, AIFF, FLAC, MP3 or OGG file; convert other formats first "
            f"(readable: {', '.join(READABLE_SUFFIXES)}).",
        ) from error


def _sample_bytes(path: Path) -> tuple[int, int] | None:
    """``(declared, present)``: bytes of samples a WAV or AIFF header promises, and holds.

    libsndfile quietly shortens a file whose samples were cut off, so we read the
    chunk headers ourselves (a few bytes each, never the samples).
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
            order, wanted, offset_bytes = ("<" if head[:4] == b"RIFF" else ">"), b"data", 0
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            order, wanted, offset_bytes = ">", b"SSND", 8  # SSND starts with offset, block size
        else:
            return None  # RF64, W64, ...: not checked
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk_id, length = struct.unpack(f"{order}4sI", handle.read(8))
            if chunk_id == wanted:
                if wanted == b"data" and length == _UNKNOWN_SIZE:
                    return None  # libsndfile then reads to the end of the file
                first_sample = position + 8 + offset_bytes
                return length - offset_bytes, max(0, size - first_sample)
            position += 8 + length + (length & 1)  # chunks are padded to an even length
    return None


def _check_not_truncated(path: Path, handle: soundfile.SoundFile) -> None:
    """A WAV or AIFF cut off while being written is refused, not read as a shorter file."""
    width = _SAMPLE_WIDTH.get(handle.subtype)
    if handle.format not in ("WAV", "WAVEX", "AIFF") or width is None:
        return
    sizes = _sample_bytes(path)
    if sizes is not None and sizes[1] < sizes[0]:
        declared, present = sizes
        raise AudioInputError(
            f"{path} is truncated: its header promises {declared // (width * handle.channels)} "
            f"frames ({declared} bytes of samples) but the file holds only {present} bytes "
            "of them.",
            "Re-export or copy the file again; it was cut off while being written.",
        )


def _undecodable(path: Path, error: Exception) -> AudioInputError:
    return AudioInputError(
        f"{path} is damaged or truncated: it cannot be decoded ({error}).",
        "Re-export or copy the file again.",
    )


def _decode(handle: soundfile.SoundFile, path: Path, frames: int) -> np.ndarray:
    """The next ``frames`` (fewer at the end of the file) as ``(channels, n)`` float32."""
    try:
        interleaved = handle.read(frames, dtype="float32", always_2d=True)
    except RuntimeError as error:  # libsndfile's decoders report damage (a FLAC losing sync)
        raise _undecodable(path, error) from error
    return np.ascontiguousarray(interleaved.T)


def _seek(handle: soundfile.SoundFile, path: Path, frame: int) -> None:
    """Go to ``frame`` of the gapless decode, exactly.

    libsndfile's Ogg seek can land up to a Vorbis block off (libsndfile issue
    #885; we measured 86 samples near the end of a file), so an OGG is decoded
    from its start instead. WAV, AIFF and FLAC seek directly; MP3 seeks
    sample-exactly by scanning frame headers (bytes read, not decoded).
    """
    if handle.format != "OGG":
        try:
            handle.seek(frame)
        except RuntimeError as error:
            raise _undecodable(path, error) from error
        return
    done = 0
    while done < frame:
        got = _decode(handle, path, min(BLOCK_FRAMES, frame - done)).shape[1]
        if got == 0:
            raise _ended_early(path, done, frame)
        done += got


def _check_finite(
    path: Path, samples: np.ndarray, first_frame: int, samplerate: int, whole_span: bool = False
) -> None:
    """NaN or infinite samples are refused; a block read alone cannot count the span's."""
    bad = ~np.isfinite(samples)
    if bad.any():
        where = (first_frame + int(np.argmax(bad.any(axis=0)))) / samplerate
        count = f"{int(bad.sum())} " if whole_span else ""
        raise AudioInputError(
            f"{path} contains {count}NaN or infinite samples (first at {where:.3f} s).",
            "The file is damaged or was rendered from a broken plug-in; re-render it.",
        )


def _ended_early(path: Path, got: int, expected: int) -> AudioInputError:
    return AudioInputError(
        f"{path} ended after {got} of the {expected} frames expected.",
        "The file is truncated or damaged; re-export it.",
    )


def audio_info(path: Path | str) -> tuple[int, int, int]:
    """``(samplerate, channels, frames)`` of a readable audio file, as decoded gaplessly."""
    path = Path(path)
    with _open(path) as handle:
        return int(handle.samplerate), int(handle.channels), int(handle.frames)


@dataclass(frozen=True)
class _SpanPlan:
    samplerate: int
    first: int
    count: int
    total: int


def _plan_span(
    path: Path, handle: soundfile.SoundFile, start: float, duration: float | None
) -> _SpanPlan:
    """Validate the file's header and the requested span without decoding audio."""
    samplerate = int(handle.samplerate)
    channels = int(handle.channels)
    total = int(handle.frames)
    seconds = total / samplerate if samplerate else 0.0
    if not MIN_SAMPLERATE <= samplerate <= MAX_SAMPLERATE:
        raise AudioInputError(
            f"{path} has a sample rate of {samplerate} Hz; daw-bridge reads "
            f"{MIN_SAMPLERATE} Hz to {MAX_SAMPLERATE} Hz.",
            "Resample the file to 44100 or 48000 Hz first.",
        )
    if channels > 2:
        raise AudioInputError(
            f"{path} has {channels} channels; daw-bridge separates mono or stereo audio.",
            "Render or downmix the clip to stereo (or mono) and split that file.",
        )
    if total == 0 or channels == 0:
        raise AudioInputError(f"{path} contains no audio (0 samples).", "Choose a clip with audio.")
    if start < 0 or not np.isfinite(start):
        raise AudioInputError(f"Start time {start} s is invalid.", "Use a start time >= 0.")
    if duration is not None and (not np.isfinite(duration) or duration <= 0):
        raise AudioInputError(
            f"Duration {duration} s is invalid.", "Use a duration greater than 0."
        )
    first = round(start * samplerate)
    count = total - first if duration is None else round(duration * samplerate)
    if first >= total or count <= 0:
        raise AudioInputError(
            f"The span starting at {start:.3f} s is outside {path} ({seconds:.3f} s long).",
            f"Use a start time below {seconds:.3f} s.",
        )
    if first + count > total:
        raise AudioInputError(
            f"The span {start:.3f} s + {duration:.3f} s runs past the end of {path} "
            f"({seconds:.3f} s long).",
            f"Shorten the duration to at most {(total - first) / samplerate:.3f} s.",
        )
    _check_not_truncated(path, handle)
    return _SpanPlan(samplerate, first, count, total)


def check_span(path: Path | str, start: float = 0.0, duration: float | None = None) -> None:
    """Raise the error :func:`read_span` would, from the header alone (cheap, early)."""
    path = Path(path)
    with _open(path) as handle:
        _plan_span(path, handle, start, duration)


def read_span(path: Path | str, start: float = 0.0, duration: float | None = None) -> AudioSpan:
    """Read ``[start, start + duration)`` seconds (to the end if ``duration`` is None).

    Only the span is read from a WAV, AIFF or FLAC; an MP3 or OGG is read from
    its start up to the span's end (see :func:`_seek`).
    """
    path = Path(path)
    with _open(path) as handle:
        plan = _plan_span(path, handle, start, duration)
        _seek(handle, path, plan.first)
        samples = _decode(handle, path, plan.count)
    if samples.shape[1] != plan.count:
        raise _ended_early(path, samples.shape[1], plan.count)
    _check_finite(path, samples, plan.first, plan.samplerate, whole_span=True)
    return AudioSpan(
        samples=samples,
        samplerate=plan.samplerate,
        source=path,
        start_frame=plan.first,
        file_frames=plan.total,
    )


def write_audio(
    path: Path | str,
    samples: np.ndarray,
    samplerate: int,
    sample_format: SampleFormat = "float32",
    overwrite: bool = False,
) -> Path:
    """Write ``(channels, frames)`` as WAV atomically; float32 keeps every value as is.

    Integer formats are scaled by ``2**(bits - 1)`` (pedalboard does so), the
    scale they are read back with, here and in DAWs, and clipped.
    """
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    with open_writer(path, samplerate, samples.shape[0], sample_format, overwrite) as writer:
        writer.write(samples)
    return Path(path)


# -- streaming: long files with bounded memory ------------------------------------------

#: Frames per block when streaming a file (about 6 s at 44.1 kHz).
BLOCK_FRAMES = 1 << 18


@dataclass(frozen=True)
class SpanInfo:
    """A validated span of a file, not yet decoded: what :func:`iter_span` reads."""

    source: Path
    samplerate: int
    channels: int
    start_frame: int
    frames: int
    file_frames: int


def open_span(path: Path | str, start: float = 0.0, duration: float | None = None) -> SpanInfo:
    """Validate ``[start, start + duration)`` from the header (the errors of :func:`read_span`)."""
    path = Path(path)
    with _open(path) as handle:
        plan = _plan_span(path, handle, start, duration)
        channels = int(handle.channels)
    return SpanInfo(path, plan.samplerate, channels, plan.first, plan.count, plan.total)


def span_sha256(info: SpanInfo) -> str:
    """:meth:`AudioSpan.content_sha256` without holding the span: one pass per channel."""
    digest = hashlib.sha256(str(info.samplerate).encode())
    for channel in range(info.channels):
        for block in iter_span(info):
            digest.update(np.ascontiguousarray(block[channel], dtype=np.float32).tobytes())
    return digest.hexdigest()


def iter_span(info: SpanInfo, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Decode the span in ``(channels, n)`` float32 blocks, validated like :func:`read_span`.

    Only one block is held at a time, so a file of any length streams in
    constant memory. Damage is reported when the block holding it is reached.
    """
    path = info.source
    with _open(path) as handle:
        _seek(handle, path, info.start_frame)
        done = 0
        while done < info.frames:
            count = min(block_frames, info.frames - done)
            samples = _decode(handle, path, count)
            if samples.shape[1] != count:
                raise _ended_early(path, done + samples.shape[1], info.frames)
            _check_finite(path, samples, info.start_frame + done, info.samplerate)
            done += count
            yield samples


class AudioWriter:
    """Appends ``(channels, n)`` blocks to a WAV; see :func:`open_writer`."""

    def __init__(self, handle: AudioFile, path: Path, track_peak: bool) -> None:
        self._handle = handle
        self._track_peak = track_peak  # only formats that clip need it
        self.path = path
        self.peak = 0.0
        self.frames = 0

    def write(self, samples: np.ndarray) -> None:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._track_peak and samples.size:
            self.peak = max(self.peak, float(np.max(np.abs(samples))))
        self._handle.write(samples)
        self.frames += samples.shape[-1]


@contextlib.contextmanager
def open_writer(
    path: Path | str,
    samplerate: int,
    channels: int,
    sample_format: SampleFormat = "float32",
    overwrite: bool = False,
) -> Iterator[AudioWriter]:
    """Write a WAV block by block; it appears under ``path`` only when complete.

    The streaming counterpart of :func:`write_audio` (same formats, same clip
    warning, same atomic publish); on an error the partial file is removed.
    """
    path = Path(path)
    if sample_format not in _BIT_DEPTH:
        raise InvalidOptionError(
            f"Unknown sample format {sample_format!r}.", f"Use one of {', '.join(SAMPLE_FORMATS)}."
        )
    with atomic_output(path, overwrite) as temporary:
        with AudioFile(
            str(temporary), "w", samplerate, channels, bit_depth=_BIT_DEPTH[sample_format]
        ) as handle:
            writer = AudioWriter(handle, path, track_peak=sample_format != "float32")
            yield writer
        if writer.peak > 1.0:
            log.warning(
                "%s peaks at %+.2f dBFS and will clip as %s; use the float32 format to keep "
                "it intact.",
                path.name,
                20 * np.log10(writer.peak),
                sample_format,
            )


def take_frames(blocks: deque[np.ndarray], frames: int) -> np.ndarray:
    """The next ``frames`` samples of a queue of ``(channels, n)`` blocks, taken off it:
    how streamed stems are matched with the mix blocks they came from."""
    pieces = []
    while frames:
        block = blocks[0]
        pieces.append(block[:, :frames])
        if block.shape[-1] > frames:
            blocks[0] = block[:, frames:]
        else:
            blocks.popleft()
        frames -= pieces[-1].shape[-1]
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)
