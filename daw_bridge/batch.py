"""``daw-bridge batch``: split every song of some folders, resumably.

A batch is many ``daw-bridge split`` runs sharing one model load: each song goes
through :func:`daw_bridge.cli.split_song`, so it is delivered all or nothing,
exactly as ``split`` delivers it. A song that cannot be split is reported and
the batch goes on; only an output folder that stops taking files ends it early
(every later song would fail the same way, after minutes of inference each).

Where stems go: ``OUT/<model>/<subfolders>/<name>``, the subfolders being the
song's path inside the folder it was found in, so a song at the top of a given
folder (or given as a file) lands exactly where ``split`` puts it. Songs that
would still share a folder (the same name in two given folders, ``song.wav``
beside ``song.flac``) get what tells them apart added to the name:
``song (live)`` / ``song (studio)``, else ``song (wav)`` / ``song (flac)``.

Resume: a song whose folder already holds a manifest of the same split (same
model, whole file, stems, sample format and residual rule, every delivered file
present) of the same input (same path, size and modification time, or else the
same decoded audio: ``span_sha256``) is skipped. What an interrupted song left is
undone first, as ``split`` undoes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from daw_bridge.errors import AudioInputError, DawBridgeError, OutputFolderError

if TYPE_CHECKING:
    from daw_bridge.cli import SplitSetup

log = logging.getLogger(__name__)

#: Exit status when the batch ran but at least one song failed.
EXIT_SOME_FAILED = 1


@dataclass(frozen=True)
class Song:
    """A file to split and its folder under ``OUT/<model>/``."""

    source: Path
    place: PurePath


@dataclass
class Outcome:
    """How one song went: ``ok``, ``skipped`` or ``failed`` (with the error's problem and fix)."""

    song: Song
    state: str
    folder: Path | None = None
    problem: str = ""
    fix: str = ""
    #: A failure that ends the batch: the output folder takes no more files.
    stops_batch: bool = False


@dataclass
class Tally:
    """The batch so far, for the result lines and the summary."""

    total: int
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(outcome.state == state for outcome in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.state == "failed"]


# -- which songs, and where their stems go ------------------------------------------------


def collect_songs(inputs: Sequence[Path], out: Path) -> list[Song]:
    """The audio files of ``inputs`` (files as given, folders searched recursively), each
    once, in a stable order, with their folders; refused before any work if one is missing.

    Hidden files and folders are passed over (``._song.wav`` beside a song on a Mac-formatted
    drive is not audio), and so is ``out``, should it lie inside a given folder.
    """
    from daw_bridge.audio.io import READABLE_SUFFIXES

    for item in inputs:
        if not item.exists():
            raise AudioInputError(
                f"{item} does not exist.", "Check the path (quote it if it contains spaces)."
            )
    skip = Path(out).resolve()
    seen: set[Path] = set()
    found: list[tuple[Path, PurePath]] = []
    for item in inputs:
        if item.is_dir():
            listed = [
                (path, PurePath(path.relative_to(item)))
                for path in _audio_files(item, skip, READABLE_SUFFIXES)
            ]
            listed.sort(key=lambda pair: (pair[1].as_posix().casefold(), pair[1].as_posix()))
        else:
            listed = [(item, PurePath(item.name))]  # given by name: tried whatever its suffix
        for path, relative in listed:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.append((path, relative))
    if not found:
        raise AudioInputError(
            f"No audio files in {', '.join(map(str, inputs))}.",
            f"Give audio files or folders holding some ({', '.join(READABLE_SUFFIXES)}).",
        )
    return _places(found)


def _audio_files(folder: Path, skip: Path, suffixes: Iterable[str]) -> list[Path]:
    wanted = {suffix.lower() for suffix in suffixes}
    files = []
    for root, folders, names in os.walk(folder):
        folders[:] = [
            name
            for name in folders
            if not name.startswith(".") and not _within(Path(root, name).resolve(), skip)
        ]
        files += [
            Path(root, name)
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() in wanted
        ]
    return files


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _places(found: list[tuple[Path, PurePath]]) -> list[Song]:
    """Each song's folder: its path without the extension, told apart from same-named ones."""
    places = [relative.with_suffix("") for _, relative in found]
    groups: dict[str, list[int]] = defaultdict(list)
    for index, place in enumerate(places):
        groups[_key(place)].append(index)  # case-blind: macOS and Windows drives are
    for indices in groups.values():
        if len(indices) > 1:
            for index, place in _told_apart([found[i][0] for i in indices], places[indices[0]]):
                places[indices[index]] = place
    clashes = defaultdict(list)
    for (path, _), place in zip(found, places, strict=True):
        clashes[_key(place)].append(path)
    for paths in clashes.values():
        if len(paths) > 1:
            raise DawBridgeError(
                f"{' and '.join(map(str, paths))} would have their stems in the same folder.",
                "Rename one of them, or split them in separate batches with different --out.",
            )
    return [Song(path, place) for (path, _), place in zip(found, places, strict=True)]


def _told_apart(paths: list[Path], place: PurePath) -> list[tuple[int, PurePath]]:
    """The same-named songs' folders, each named with its parent folder, else its extension,
    else both; unchanged when nothing tells them apart (then refused)."""
    parent = [path.resolve().parent.name for path in paths]
    suffix = [path.suffix.lstrip(".").lower() for path in paths]
    for labels in (parent, suffix, [f"{p}, {s}" for p, s in zip(parent, suffix, strict=True)]):
        if len({label.casefold() for label in labels}) == len(labels):
            return [
                (index, place.with_name(f"{place.name} ({label})"))
                for index, label in enumerate(labels)
            ]
    return [(index, place) for index in range(len(paths))]


def _key(place: PurePath) -> str:
    return place.as_posix().casefold()


# -- resume -------------------------------------------------------------------------------


def earlier_split(folder: Path, source: Path, setup: SplitSetup) -> str | None:
    """Whether ``folder`` already holds this song's split as ``setup`` would make it.

    ``None``: no manifest there. ``""``: the same split of the same input, complete (the
    manifest is published last, so it vouches for the files before it, which are checked
    all the same). Otherwise why it is not: another input, model or options, or a file
    gone.
    """
    from daw_bridge.audio.io import open_span, span_sha256
    from daw_bridge.separation.keep import REST_STEM
    from daw_bridge.separation.pipeline import MANIFEST_NAME, _file_facts

    manifest = folder / MANIFEST_NAME
    if not manifest.exists():
        return None
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
        given = document["input"]
        stems = dict(document["stems"])
    except (OSError, ValueError, KeyError, TypeError):
        return "its manifest.json cannot be read"
    model = setup.separator.name
    if document.get("model") != model:
        return f"split with the model {document.get('model')}, not {model}"
    if given.get("start_frame") != 0 or document.get("frames") != given.get("file_frames"):
        return "a span of the song, not all of it"
    if document.get("sample_format") != setup.sample_format:
        return f"{document.get('sample_format')} stems, not {setup.sample_format}"
    if set(stems) != set(setup.names):
        return f"the stems {', '.join(stems)}, not {', '.join(setup.names)}"
    if bool(document.get("sum_to_input")) != (setup.sum_to_input or bool(setup.two_stems)):
        return "stems made with another --no-residual setting"
    wanted = [*stems.values(), *(f"{kind}.mid" for kind in setup.kinds)]
    if setup.drum_kit is not None:
        wanted += [f"drums/{piece}.wav" for piece in [*setup.drum_kit.sources, REST_STEM]]
    if setup.preset is not None:
        wanted += [f"{setup.preset.name}/{name}.wav" for name in setup.names]
    for name in wanted:
        if not (folder / name).is_file():
            return f"{name} is missing"
    same_file = {"path": str(source.resolve()), **_file_facts(source)}
    if all(given.get(key) == value for key, value in same_file.items()):
        return ""
    # Moved, copied or re-tagged: the same audio all the same? (one decoding pass)
    if given.get("span_sha256") == span_sha256(open_span(source)):
        return ""
    return f"the stems of other audio ({given.get('path')})"


# -- the command --------------------------------------------------------------------------


def add_parser(
    commands,
    add_model_options: Callable[[argparse.ArgumentParser], None],
    add_preset_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The ``batch`` subcommand; the shared option groups come from the CLI module."""
    from daw_bridge.audio.formats import SAMPLE_FORMATS

    batch = commands.add_parser(
        "batch", help="split every audio file of some folders (resumes where it stopped)"
    )
    batch.add_argument(
        "inputs", type=Path, nargs="+", metavar="DIR_OR_FILE", help="folders (searched "
        "recursively for WAV, AIFF, FLAC, MP3 and OGG files) and audio files",
    )  # fmt: skip
    batch.add_argument(
        "--out", type=Path, default=Path("separated"), help="output folder (default: separated)"
    )
    batch.add_argument("--two-stems", metavar="STEM", help="only STEM and no_STEM")
    batch.add_argument("--keep", metavar="STEMS", help="only these stems; the others as 'rest'")
    batch.add_argument("--drum-kit", metavar="MODEL", help="also split drums into pieces")
    batch.add_argument("--format", choices=SAMPLE_FORMATS, default="float32")
    batch.add_argument("--no-residual", action="store_true", help="keep the model's 'other' as is")
    batch.add_argument(
        "--overwrite",
        action="store_true",
        help="redo songs whose folder holds other stems (the same split is skipped all the same)",
    )
    batch.add_argument("--midi", metavar="KINDS", help="also MIDI for e.g. drums,bass,vocals")
    add_preset_options(batch)
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_options(batch)
    from daw_bridge.cluster.options import add_options as add_cluster_options

    add_cluster_options(batch)


def run_batch(args: argparse.Namespace) -> int:
    """Split every song of ``args.inputs``; 0 when none failed, else :data:`EXIT_SOME_FAILED`."""
    from daw_bridge.cli import prepare_split

    songs = collect_songs(args.inputs, args.out)  # a typo in a path stops it before any work
    if args.ray:  # the same songs, outcomes and summary; the separation on Ray workers
        from daw_bridge.cluster.batch import run_on_cluster

        return run_on_cluster(args, songs)
    setup = prepare_split(args)  # checks --out and the options, loads the model once
    tally = Tally(len(songs))
    bar = _progress_bar(args.quiet, len(songs), setup.separator.name)
    song = songs[0]
    with bar:
        try:
            for number, song in enumerate(songs, 1):
                bar.set_postfix_str(song.source.name, refresh=False)
                outcome = _one_song(song, setup, args, lambda f, n=number: _advance(bar, n, f))
                tally.outcomes.append(outcome)
                bar.write(_result_line(number, tally.total, outcome), file=sys.stdout)
                _advance(bar, number, 1.0)
                if outcome.stops_batch:
                    break
        except KeyboardInterrupt:
            bar.close()
            print(
                f"\nInterrupted while splitting {song.source}: nothing of it was written. "
                "Run the same command again to go on from there.",
                file=sys.stderr,
            )
            _print_summary(tally)
            raise
    _print_summary(tally)
    return EXIT_SOME_FAILED if tally.failed else 0


def _one_song(
    song: Song, setup: SplitSetup, args: argparse.Namespace, progress: Callable[[float], None]
) -> Outcome:
    """Split one song, or say why not; only an interruption gets out of here."""
    from daw_bridge.audio.io import open_span
    from daw_bridge.cli import _split_run_ended, split_song
    from daw_bridge.delivery import sweep
    from daw_bridge.separation.pipeline import output_folder

    folder = None
    try:
        info = open_span(song.source)  # the header only: a bad file fails here, in a moment
        folder = output_folder(args.out, setup.separator.name, info).parent / song.place
        sweep(folder, _split_run_ended)  # what an interrupted run of this song left
        earlier = earlier_split(folder, song.source, setup)
        if earlier == "":
            return Outcome(song, "skipped", folder)
        if earlier is not None and not args.overwrite:
            return _failed(
                song,
                DawBridgeError(
                    f"{folder} already holds {earlier}.",
                    "Pass --overwrite to split it again there, or choose another --out.",
                ),
                folder,
            )
        split_song(setup, song.source, folder, overwrite=args.overwrite, progress=progress)
        return Outcome(song, "ok", folder)
    except DawBridgeError as error:
        return _failed(song, error, folder)
    except Exception as error:  # a bug or an odd file must not cost the rest of the batch
        log.info("splitting %s failed", song.source, exc_info=True)
        return _failed(
            song,
            DawBridgeError(
                f"{type(error).__name__}: {error}",
                f"Run `daw-bridge -v split {str(song.source)!r}` to see the details, and "
                "report it if the file plays in other programs.",
            ),
            folder,
        )


def _failed(song: Song, error: DawBridgeError, folder: Path | None) -> Outcome:
    # A full drive or a folder that stopped taking files fails every later song as well.
    stops = isinstance(error, OutputFolderError)
    return Outcome(song, "failed", folder, _one_line(error.problem), _one_line(error.fix), stops)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _result_line(number: int, total: int, outcome: Outcome) -> str:
    head = f"[{number}/{total}] {outcome.state:7s} {outcome.song.source}"
    if outcome.state == "ok":
        return f"{head} -> {outcome.folder}"
    if outcome.state == "skipped":
        return f"{head} (already split in {outcome.folder})"
    fix = f" How to fix: {outcome.fix}" if outcome.fix else ""
    return f"{head}: {outcome.problem}{fix}"


def _print_summary(tally: Tally) -> None:
    done = len(tally.outcomes)
    counts = ", ".join(f"{tally.count(state)} {state}" for state in ("ok", "skipped", "failed"))
    rest = f", {tally.total - done} not started" if done < tally.total else ""
    print(f"Batch: {counts}{rest} (of {tally.total} songs).")
    if tally.failed:
        print("Failed:")
        for outcome in tally.failed:
            print(f"  {outcome.song.source}: {outcome.problem}")
            if outcome.fix:
                print(f"    How to fix: {outcome.fix}")
        if tally.failed[-1].stops_batch and done < tally.total:
            print("The batch stopped there: the output folder takes no more files.")


def _progress_bar(quiet: bool, songs: int, model: str):
    """One bar for the whole batch, in songs; off with -q and when stderr is no terminal
    (a log file would get a line per refresh: the result lines say enough there)."""
    from tqdm import tqdm

    return tqdm(
        total=songs,
        desc=f"Splitting with {model}",
        unit="song",
        file=sys.stderr,
        disable=quiet or not sys.stderr.isatty(),
        bar_format="{desc}: {n:.1f}/{total} songs|{bar}| {elapsed}<{remaining} {postfix}",
    )


def _advance(bar, number: int, fraction: float) -> None:
    """Move the bar to ``fraction`` of song ``number`` (1-based)."""
    bar.update(max(0.0, (number - 1 + fraction) - bar.n))
