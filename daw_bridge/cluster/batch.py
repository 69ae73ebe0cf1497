"""``daw-bridge batch --ray ADDRESS``: the batch's songs spread over Ray workers.

Everything but the separation is :mod:`daw_bridge.batch`'s own: which songs and
where, the resume rule, :func:`~daw_bridge.batch._one_song` (so each song is
delivered all or nothing by :func:`daw_bridge.cli.split_song`, in this process),
the result lines, the bar and the summary. What differs: the model is a
:class:`~daw_bridge.cluster.separator.RaySeparator`, and as many songs run at
once as there are workers (plus one being read or written meanwhile), so the
result lines come in the order songs finish, numbered as they come.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daw_bridge.batch import Outcome, Song
    from daw_bridge.cli import SplitSetup
    from daw_bridge.cluster.pool import WorkerPool


def run_on_cluster(args: argparse.Namespace, songs: Sequence[Song]) -> int:
    """Split ``songs`` on the Ray cluster ``args.ray``; the exit status of ``batch``."""
    from daw_bridge.cli import prepare_split
    from daw_bridge.cluster.options import open_pool

    with open_pool(args) as pool:
        setup = prepare_split(args, load=partial(_load_on, pool))
        if not args.quiet:
            print(f"Ray cluster {args.ray}: {pool.plan.describe()}", file=sys.stderr)
        return _run(songs, setup, args, pool)


def _load_on(pool: WorkerPool, args: argparse.Namespace, model: str | None = None) -> Any:
    """:func:`daw_bridge.cli._load`, on the workers."""
    from daw_bridge.cli import load_options

    options = load_options(args, model)
    return pool.separator(options.pop("model"), **options)


def _run(
    songs: Sequence[Song], setup: SplitSetup, args: argparse.Namespace, pool: WorkerPool
) -> int:
    from daw_bridge.batch import (
        EXIT_SOME_FAILED,
        Tally,
        _one_song,
        _print_summary,
        _progress_bar,
        _result_line,
    )

    tally = Tally(len(songs))
    bar = _progress_bar(args.quiet, len(songs), setup.separator.name)
    lock = threading.Lock()
    shares = [0.0] * len(songs)  # each song's fraction done, for the bar
    started: set[int] = set()

    def advance(index: int, fraction: float) -> None:
        with lock:
            shares[index] = max(shares[index], fraction)
            bar.update(max(0.0, sum(shares) - bar.n))

    def one(index: int) -> Outcome:
        with lock:
            started.add(index)
        return _one_song(songs[index], setup, args, partial(advance, index))

    def record(future: Future[Outcome]) -> None:
        outcome, index = future.result(), futures[future]
        recorded.add(future)
        tally.outcomes.append(outcome)
        bar.write(_result_line(len(tally.outcomes), tally.total, outcome), file=sys.stdout)
        advance(index, 1.0)

    def stop() -> None:
        """End the songs still running (cancelled: nothing of them stays) and those not
        begun; a song delivered meanwhile is reported as done, since it is."""
        if len(recorded) < len(futures):
            pool.close()
        executor.shutdown(wait=True, cancel_futures=True)
        for future in futures:
            if future in recorded or future.cancelled() or future.exception() is not None:
                continue
            if future.result().state == "ok":
                record(future)

    made = _make_parents(songs, args.out, setup.separator.name)  # see _make_parents
    executor = ThreadPoolExecutor(pool.size + 1, thread_name_prefix="daw-bridge-song")
    futures: dict[Future[Outcome], int] = {executor.submit(one, i): i for i in range(len(songs))}
    recorded: set[Future[Outcome]] = set()
    try:
        with bar:
            try:
                for future in as_completed(futures):
                    record(future)  # re-raises a song's KeyboardInterrupt
                    if tally.outcomes[-1].stops_batch:
                        break
            finally:
                stop()
    except KeyboardInterrupt:
        kept = {outcome.song for outcome in tally.outcomes}
        lost = [songs[i].source for i in sorted(started) if songs[i] not in kept]
        if lost:
            names = ", ".join(map(str, lost))
            print(
                f"\nInterrupted while splitting {names}: nothing of "
                f"{'it' if len(lost) == 1 else 'them'} was written. "
                "Run the same command again to go on from there.",
                file=sys.stderr,
            )
        _print_summary(tally)
        raise
    finally:
        _remove_empty(made)
    _print_summary(tally)
    return EXIT_SOME_FAILED if tally.failed else 0


def _make_parents(songs: Sequence[Song], out: Path, model: str) -> list[Path]:
    """Make the folders the songs' folders go in, before songs run side by side.

    A delivery removes the empty folders it made when its song fails; with songs
    at once, that could remove a folder a sibling song is about to stage in. So
    they are made here, and :func:`_remove_empty` takes away the ones left empty.
    """
    from daw_bridge.delivery import _missing_folders
    from daw_bridge.separation.pipeline import output_folder

    whole = SimpleNamespace(source=Path("song"), start_frame=0, frames=0, file_frames=0)
    root = output_folder(out, model, whole).parent  # OUT/<model>, named as split names it
    missing = _missing_folders(*{(root / song.place).parent for song in songs})
    for folder in sorted(missing, key=lambda path: len(path.parts)):
        folder.mkdir(exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    from daw_bridge.delivery import _remove_empty as remove

    remove(folders)
