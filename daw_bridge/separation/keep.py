"""Only the stems a producer asked for: the others become one "rest" stem, their sum.

So the kept stems plus ``rest`` still sum to the input (exactly in float32,
within one step of the sample format otherwise). The model still separates
every stem (the cache keeps them all); only what is delivered changes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile

from daw_bridge.audio.io import BLOCK_FRAMES, SampleFormat, open_writer
from daw_bridge.errors import InvalidOptionError
from daw_bridge.files import atomic_output

REST_STEM = "rest"


def check_keep(keep: Sequence[str], stems: Sequence[str], two_stems: str | None = None) -> None:
    """Refuse names that are not stems of the model, before any inference."""
    if not keep:
        return
    if two_stems is not None:
        raise InvalidOptionError(
            "--keep and --two-stems both choose the stems to deliver.",
            f"Use one: --two-stems {two_stems} is --keep {two_stems} with the rest as "
            f"no_{two_stems}.",
        )
    unknown = [name for name in keep if name not in stems]
    if unknown:
        raise InvalidOptionError(
            f"{', '.join(map(repr, unknown))} is not a stem of this model.",
            f"Keep some of: {', '.join(stems)}.",
        )


def keep_stems(
    stems: dict[str, Path],
    keep: Sequence[str],
    sample_format: SampleFormat,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Replace the stems not in ``keep`` by ``rest.wav``, their sum; the stems now.

    The dropped files are unlinked, never written to (they may be hard links to
    the server's cache), and the folder's manifest is replaced by a new file
    naming the stems delivered.
    """
    check_keep(keep, list(stems))
    dropped = [path for name, path in stems.items() if name not in keep]
    if not keep or not dropped:
        return dict(stems)
    folder = dropped[0].parent
    rest = folder / f"{REST_STEM}.wav"
    _write_sum(dropped, rest, sample_format, overwrite)
    for path in dropped:
        path.unlink()
    kept = {name: path for name, path in stems.items() if name in keep}
    kept[REST_STEM] = rest
    _rewrite_manifest(folder / "manifest.json", kept, [p.stem for p in dropped])
    return kept


def _write_sum(
    paths: list[Path], target: Path, sample_format: SampleFormat, overwrite: bool
) -> None:
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(soundfile.SoundFile(path)) for path in paths]
        first = readers[0]
        writer = stack.enter_context(
            open_writer(target, first.samplerate, first.channels, sample_format, overwrite)
        )
        while True:
            blocks = [
                reader.read(BLOCK_FRAMES, dtype="float64", always_2d=True) for reader in readers
            ]
            if not len(blocks[0]):
                break
            total = np.sum(blocks, axis=0)
            writer.write(total.T.astype(np.float32))


def _rewrite_manifest(manifest: Path, stems: dict[str, Path], merged: list[str]) -> None:
    if not manifest.is_file():
        return
    document = json.loads(manifest.read_text(encoding="utf-8"))
    document["stems"] = {name: path.name for name, path in stems.items()}
    document["rest"] = merged
    if document.get("residual_stem") in merged:
        document["residual_stem"] = REST_STEM
    document.pop("sha256", None)  # the cache's record of its own files
    # A new file replaces the name: a manifest linked from the cache is left as it was.
    with atomic_output(manifest, overwrite=True) as temporary:
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
