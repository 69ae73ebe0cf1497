"""The ``daw-bridge`` command line.

Every user-facing failure is a :class:`DawBridgeError`, printed as the problem and
its fix with exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from daw_bridge import __version__
from daw_bridge.errors import DawBridgeError, ModelUnavailableError
from daw_bridge.midi import parse_kinds
from daw_bridge.protocol import DEFAULT_ADDRESS, MAX_MESSAGE_BYTES
from daw_bridge.separation.backends import BACKENDS

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _print_error(error: DawBridgeError) -> None:
    print(f"daw-bridge: error: {error.problem}", file=sys.stderr)
    if error.fix:
        print(f"How to fix: {error.fix}", file=sys.stderr)


def _progress_bar(quiet: bool, description: str):
    from tqdm import tqdm

    bar = tqdm(
        total=100,
        desc=description,
        unit="%",
        file=sys.stderr,
        disable=quiet,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
    )

    def update(fraction: float) -> None:
        bar.update(max(0.0, 100.0 * fraction - bar.n))

    return bar, update


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="htdemucs",
        help="htdemucs (default), htdemucs_ft, htdemucs_6s, hdemucs_mmi, a checkpoint "
        "file (.th), dsp (classical, no weights, lower quality), or an ensemble: a name "
        "such as best-vocals, a .toml file, or stem=model,... (`daw-bridge models` lists all)",
    )
    parser.add_argument(
        "--model-config",
        type=Path,
        metavar="YAML",
        help="the YAML config of an MSST checkpoint given to --model, where it is not "
        "saved beside it as <checkpoint>.yaml",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="folder holding the model weights (default: $DAW_BRIDGE_MODEL_DIR, then caches)",
    )
    parser.add_argument(
        "--no-download", action="store_true", help="never download weights; fail if missing"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--half",
        action="store_true",
        help="half precision: Demucs on CUDA only; MSST models float16 on CUDA, bfloat16 on CPU",
    )
    parser.add_argument(
        "--shifts", type=int, default=0, help="random time shifts averaged (slower, +~0.2 dB)"
    )
    parser.add_argument(
        "--overlap", type=float, default=0.25, help="overlap between segments (default 0.25)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="segments per forward pass (default: 1 on CPU, 4 on GPU)"
    )
    _add_backend_option(parser)


def _add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="how HTDemucs runs on the CPU: auto (default: openvino when installed), torch "
        "(exactly demucs's numbers), openvino-bf16 (opt-in, CPUs with AMX or AVX-512 BF16 "
        "only: faster, but moves stems by up to -46 dB) or openvino-f16 (opt-in, CPUs with "
        "AVX-512 FP16 or AVX2-VNNI-2 only: experimental, it overflowed to NaN once, and a "
        "NaN stops the job with an error); default: $DAW_BRIDGE_BACKEND, "
        "then auto",
    )


def _add_preset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help="also apply this effect preset to the stems (see `daw-bridge presets list`, "
        "or a .toml file); processed stems go to a subfolder named after it",
    )
    parser.add_argument(
        "--tail",
        choices=("cut", "extend"),
        help="effect tails: cut at the stem's end, or extend the stem (default: the preset's)",
    )


def _build_parser() -> argparse.ArgumentParser:
    from daw_bridge.audio.formats import SAMPLE_FORMATS

    parser = argparse.ArgumentParser(
        prog="daw-bridge", description="AI stem separation for REAPER and the command line."
    )
    parser.add_argument("--version", action="version", version=f"daw-bridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True)

    split = commands.add_parser("split", help="split an audio file (or a span of it) into stems")
    split.add_argument("input", type=Path, help="WAV, AIFF, FLAC, MP3 or OGG file")
    split.add_argument("--start", type=float, default=0.0, help="span start in seconds")
    split.add_argument("--duration", type=float, help="span length in seconds (default: to end)")
    split.add_argument(
        "--two-stems", metavar="STEM", help="only STEM and no_STEM (e.g. vocals / instrumental)"
    )
    split.add_argument(
        "--keep",
        metavar="STEMS",
        help="only these stems (e.g. vocals or drums,bass); the others summed as 'rest'",
    )
    split.add_argument(
        "--drum-kit",
        metavar="MODEL",
        help="also split the drums stem into its pieces with MODEL (e.g. drumsep), in drums/",
    )
    split.add_argument(
        "--out", type=Path, default=Path("separated"), help="output folder (default: separated)"
    )
    split.add_argument(
        "--format",
        choices=SAMPLE_FORMATS,
        default="float32",
        help="WAV sample format (default float32: no clipping, no rounding)",
    )
    split.add_argument(
        "--no-residual",
        action="store_true",
        help="keep the model's 'other' as is (stems then need not sum exactly to the input)",
    )
    split.add_argument("--overwrite", action="store_true", help="replace existing stem files")
    split.add_argument(
        "--midi", metavar="KINDS", help="also write MIDI for these stems, e.g. drums,bass,vocals"
    )
    _add_preset_options(split)
    split.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_model_options(split)

    from daw_bridge.batch import add_parser as add_batch_parser

    add_batch_parser(commands, _add_model_options, _add_preset_options)

    demo = commands.add_parser(
        "demo", help="make a short synthetic song and split it (the quick-start check)"
    )
    demo.add_argument("--out", type=Path, default=Path("daw-bridge-demo"))
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_model_options(demo)

    commands.add_parser("models", help="list the models and where their weights are")

    midi = commands.add_parser("midi", help="turn a drums, bass or vocals stem into MIDI")
    midi.add_argument("stem", type=Path, help="a stem WAV (or any audio file)")
    midi.add_argument("--kind", choices=("drums", "bass", "vocals"), required=True)
    midi.add_argument("--out", type=Path, help="MIDI file (default: next to the stem, .mid)")
    midi.add_argument("--min-note", type=float, default=0.08, help="shortest note in seconds")
    midi.add_argument("--overwrite", action="store_true", help="replace an existing MIDI file")
    midi.add_argument(
        "--pitch-bend", action="store_true", help="bass/vocals: follow glides and vibrato"
    )

    presets = commands.add_parser("presets", help="effect presets for stems: list, show, validate")
    presets_actions = presets.add_subparsers(dest="presets_action", required=True)
    presets_actions.add_parser("list", help="built-in and your own presets")
    presets_actions.add_parser("show", help="print a preset's file").add_argument(
        "preset", help="a preset name or a .toml file"
    )
    presets_actions.add_parser("validate", help="check preset files").add_argument(
        "preset", nargs="+", help="preset names or .toml files"
    )

    serve = commands.add_parser("serve", help="run the resident inference server")
    serve.add_argument("--bind", default=DEFAULT_ADDRESS, help=f"default {DEFAULT_ADDRESS}")
    serve.add_argument("--model", default="htdemucs", help="model kept warm (default htdemucs)")
    serve.add_argument("--model-dir", type=Path, help="folder holding the model weights")
    serve.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    _add_backend_option(serve)
    from daw_bridge.cluster.options import add_options as add_cluster_options

    add_cluster_options(serve)
    serve.add_argument("--state-dir", type=Path, help="jobs and stem cache (default: user cache)")
    serve.add_argument(
        "--cache-size-mb", type=int, default=2048, help="stem cache bound (default 2048)"
    )
    serve.add_argument(
        "--max-message-mb",
        type=int,
        default=MAX_MESSAGE_BYTES // 2**20,
        help=f"larger messages are dropped (default {MAX_MESSAGE_BYTES // 2**20})",
    )
    serve.add_argument(
        "--model-memory-mb",
        type=int,
        default=8192,
        help="unload least recently used models when the loaded models' weights pass this "
        "(default 8192)",
    )
    from daw_bridge.server.jobs import KEEP_DAYS, KEEP_JOBS

    serve.add_argument(
        "--keep-days",
        type=float,
        default=KEEP_DAYS,
        help=f"forget finished jobs after this many days (default {KEEP_DAYS:g})",
    )
    serve.add_argument(
        "--keep-jobs",
        type=int,
        default=KEEP_JOBS,
        help=f"and keep at most this many finished jobs (default {KEEP_JOBS})",
    )

    from daw_bridge.reaper.commands import add_commands as add_reaper_commands

    add_reaper_commands(commands)
    keys = commands.add_parser("keys", help="the keys that decide who may use the server")
    keys_actions = keys.add_subparsers(dest="keys_action", required=True)
    keys_actions.add_parser("show", help="this machine's keys, allowed clients, known servers")
    allow = keys_actions.add_parser("allow", help="let another machine's client use this server")
    allow.add_argument("key", help="the client key `daw-bridge keys show` prints there")
    allow.add_argument("--label", default="", help="a note of whose key it is")
    keys_actions.add_parser(
        "revoke", help="stop letting a client in, or forget a server's key"
    ).add_argument("key")
    trust = keys_actions.add_parser("trust", help="record the key of a server on another machine")
    trust.add_argument("address", help="the server's address, as given to --server")
    trust.add_argument("key", help="the server key `daw-bridge keys show` prints there")
    client = commands.add_parser("client", help="talk to a running server")
    client.add_argument("--server", default=DEFAULT_ADDRESS, help=f"default {DEFAULT_ADDRESS}")
    client.add_argument("--timeout", type=float, default=10.0, help="seconds of silence = dead")
    actions = client.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("split", help="split a file (or span) on the server")
    submit.add_argument("input", type=Path)
    submit.add_argument("--start", type=float, default=0.0)
    submit.add_argument("--duration", type=float)
    submit.add_argument("--out", type=Path, help="folder for the stems (default separated/<name>)")
    submit.add_argument("--model", help="model (default: the server's)")
    submit.add_argument("--two-stems", metavar="STEM")
    submit.add_argument("--keep", metavar="STEMS", help="e.g. drums,bass; the others as 'rest'")
    submit.add_argument("--drum-kit", metavar="MODEL", help="drums into pieces, e.g. drumsep")
    submit.add_argument("--format", choices=SAMPLE_FORMATS)
    submit.add_argument("--overwrite", action="store_true")
    submit.add_argument("--midi", metavar="KINDS", help="also MIDI for e.g. drums,bass,vocals")
    _add_preset_options(submit)
    submit.add_argument("--status-file", type=Path, help="keep key=value progress in this file")
    submit.add_argument("--autostart", action="store_true", help="start a server if none runs")
    submit.add_argument("--server-log", type=Path, help="log file of an autostarted server")
    submit.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    submit.add_argument("--server", default=argparse.SUPPRESS, help="as before the action")
    submit.add_argument(
        "--send-bytes",
        action="store_true",
        help="send the audio and fetch the stems as bytes (automatic when --server is "
        "not this machine)",
    )
    for name in ("status", "models", "shutdown"):
        actions.add_parser(name)
    for name in ("cancel", "result"):
        actions.add_parser(name).add_argument("job")
    apply = actions.add_parser(
        "apply", help="re-apply an effect preset to a finished job's raw stems (no separation)"
    )
    apply.add_argument("job", help="id of a finished split (or apply) job")
    apply.add_argument("--preset", required=True, metavar="NAME", help="preset name or .toml")
    apply.add_argument("--tail", choices=("cut", "extend"), help="default: the preset's")
    apply.add_argument("--status-file", type=Path, help="keep key=value progress in this file")
    apply.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return parser


def load_options(args: argparse.Namespace, model: str | None = None) -> dict[str, Any]:
    """The :func:`~daw_bridge.models.loader.load_separator` arguments for ``model`` (default:
    ``--model``) from the model options; shared with the Ray workers (``batch --ray``)."""
    return {
        "model": model or args.model,
        "model_dir": args.model_dir,
        "device": args.device,
        "download": not args.no_download,
        "shifts": args.shifts,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "half": args.half,
        "backend": args.backend,
        "model_config": args.model_config if model is None else None,
    }


def _load(args: argparse.Namespace, model: str | None = None):
    from daw_bridge.models.loader import load_separator

    options = load_options(args, model)
    return load_separator(options.pop("model"), **options)


@dataclass
class SplitSetup:
    """What every song of a split needs, checked and loaded once (one model load per batch)."""

    separator: Any
    names: list[str]  # the stems delivered (after --two-stems / --keep)
    keep: list[str]
    kinds: list[str]
    preset: Any
    tail: str | None
    drum_kit: Any
    two_stems: str | None
    sample_format: str
    sum_to_input: bool


@dataclass
class SplitDone:
    """The final paths of one song's delivered files."""

    folder: Path
    frames: int
    samplerate: int
    stems: dict[str, Path]
    midi: dict[str, Path]
    pieces: dict[str, Path]
    processed: dict[str, Path]


def prepare_split(args: argparse.Namespace, load: Callable[..., Any] | None = None) -> SplitSetup:
    """Check the options and load the models, before any song is read or written.

    ``load(args, model=None)`` loads a model (default: in this process; ``batch --ray``
    loads them on its workers)."""
    load = load or _load
    from daw_bridge.files import check_output_folder
    from daw_bridge.separation.keep import REST_STEM, check_keep
    from daw_bridge.separation.pipeline import stem_names

    check_output_folder(args.out)
    kinds = parse_kinds(args.midi)
    if kinds:
        from daw_bridge.midi.convert import check_kinds

        check_kinds(kinds)
    preset = None
    if args.preset:
        from daw_bridge.presets.apply import check_tail
        from daw_bridge.presets.library import load as load_preset

        preset = load_preset(args.preset)
        check_tail(args.tail)
    separator = load(args)
    keep = parse_kinds(args.keep)
    check_keep(keep, separator.sources, args.two_stems)  # before any inference
    names = stem_names(separator, args.two_stems)
    drum_kit = None
    if args.drum_kit:
        from daw_bridge.separation.drum_kit import check_drum_kit

        check_drum_kit(names, keep)  # the stems delivered: --two-stems drums has drums
        drum_kit = load(args, args.drum_kit)
    if keep and set(names) - set(keep):
        names = [*keep, REST_STEM]
    return SplitSetup(
        separator, names, keep, kinds, preset, args.tail, drum_kit, args.two_stems,
        args.format, not args.no_residual,
    )  # fmt: skip


def split_song(
    setup: SplitSetup,
    source: Path,
    folder: Path,
    *,
    start: float = 0.0,
    duration: float | None = None,
    overwrite: bool = False,
    progress: Callable[[float], None] | None = None,
) -> SplitDone:
    """Split one song into ``folder``; its stems, manifest, MIDI and processed stems appear
    all at once or not at all (the server's delivery), so a failure never leaves a mixed or
    partial set."""
    from daw_bridge.delivery import Delivery, sweep
    from daw_bridge.files import ensure_writable
    from daw_bridge.separation.keep import keep_stems
    from daw_bridge.separation.pipeline import MANIFEST_NAME, split_file

    kinds, preset = setup.kinds, setup.preset
    wanted = [*(f"{n}.wav" for n in setup.names), MANIFEST_NAME, *(f"{k}.mid" for k in kinds)]
    for name in wanted:
        ensure_writable(folder / name, overwrite)  # refused before minutes of inference
    sweep(folder, _split_run_ended)
    with Delivery(folder, f"cli-{os.getpid()}") as delivery:
        result = split_file(
            source,
            setup.separator,
            folder,
            start=start,
            duration=duration,
            into=delivery.staging,
            two_stems=setup.two_stems,
            sample_format=setup.sample_format,
            sum_to_input=setup.sum_to_input,
            progress=progress,
        )
        pieces = {}
        if setup.drum_kit is not None:
            from daw_bridge.separation.drum_kit import DRUMS, split_drums

            pieces = split_drums(
                result.stems[DRUMS], setup.drum_kit, delivery.path(DRUMS), setup.sample_format
            )
        midi = {}
        if kinds:
            from daw_bridge.midi.convert import midi_for_stems

            # Drums MIDI takes kick and snare from their own pieces where the kit gave them.
            midi = midi_for_stems(result.stems, kinds, pieces=pieces)
        stems = keep_stems(result.stems, setup.keep, setup.sample_format)
        processed = {}
        if preset is not None:
            from daw_bridge.presets.apply import apply_preset, processed_folder

            processed = apply_preset(
                preset, stems, processed_folder(delivery.staging, preset), tail=setup.tail
            )
        delivery.publish(overwrite, replace_in=[preset.name] if preset else [])

    def finals(staged: dict[str, Path]) -> dict[str, Path]:
        return {name: delivery.final(path) for name, path in staged.items()}

    return SplitDone(
        folder, result.frames, result.samplerate, finals(stems), finals(midi), finals(pieces),
        finals(processed),
    )  # fmt: skip


def _run_split(args: argparse.Namespace) -> int:
    """Split a file (see :func:`split_song`)."""
    from daw_bridge.audio.io import check_span, open_span
    from daw_bridge.separation.pipeline import MANIFEST_NAME, output_folder

    check_span(args.input, args.start, args.duration)  # before any download or model load
    setup = prepare_split(args)
    span = open_span(args.input, args.start, args.duration)
    folder = output_folder(args.out, setup.separator.name, span)
    bar, update = _progress_bar(args.quiet, f"Splitting with {setup.separator.name}")
    with bar:
        done = split_song(
            setup,
            args.input,
            folder,
            start=args.start,
            duration=args.duration,
            overwrite=args.overwrite,
            progress=update,
        )
    print(f"Stems ({done.frames} frames at {done.samplerate} Hz) in {folder}:")
    for name, path in done.stems.items():
        print(f"  {name:10s} {path}")
    print(f"  manifest   {folder / MANIFEST_NAME}")
    for kind, path in done.midi.items():
        print(f"  {kind + ' MIDI':10s} {path}")
    for piece, path in done.pieces.items():
        print(f"  {'drums: ' + piece:10s} {path}")
    if setup.preset is not None:
        print(f"Preset {setup.preset.name} applied, in {folder / setup.preset.name}:")
        for name, path in done.processed.items():
            print(f"  {name:10s} {path}")
    return 0


def _split_run_ended(tag: str) -> bool:
    """Whether a staging folder's tag is a ``daw-bridge split`` run that is no longer running
    (its leftovers are undone). Unknown on Windows: there they wait for the same pid."""
    pid = tag.removeprefix("cli-")
    if not (tag.startswith("cli-") and pid.isdigit()) or os.name == "nt":
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # exists, another user's
        return False
    return False


def _warn_loudly(text: str) -> None:
    sys.stdout.flush()  # keep the warning in its place when both streams share a terminal
    rule = "!" * 78
    print(f"\n{rule}\nWARNING: {text}\n{rule}\n", file=sys.stderr)


def _run_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from daw_bridge.audio.io import write_audio
    from daw_bridge.demo import synthetic_song
    from daw_bridge.files import check_output_folder
    from daw_bridge.models.loader import DSP_MODEL
    from daw_bridge.separation.metrics import best_constant_gain_sdr, sdr
    from daw_bridge.separation.pipeline import split_file

    check_output_folder(args.out)
    mix, truth = synthetic_song(seconds=8.0)
    clip = write_audio(args.out / "demo_clip.wav", mix, 44100, overwrite=True)
    print(f"Demo clip: {clip} (8 s synthetic song: drums, bass, voice-like lead, pad)")
    try:
        separator = _load(args)
    except ModelUnavailableError as error:
        if args.model == DSP_MODEL:
            raise
        _warn_loudly(
            f"the neural model '{args.model}' is not available, so this demo falls back to "
            f"the classical DSP separator, which is far less accurate.\n{error}"
        )
        args.model = DSP_MODEL
        separator = _load(args)
    bar, update = _progress_bar(args.quiet, f"Splitting with {separator.name}")
    with bar:
        result = split_file(clip, separator, args.out, overwrite=True, progress=update)
    from daw_bridge.audio.io import read_span

    total = np.zeros_like(mix)
    print(f"Stems in {result.folder}:")
    for name, path in result.stems.items():
        stem = read_span(path).samples
        total += stem
        if name in truth:
            baseline = best_constant_gain_sdr(truth[name], mix)
            print(
                f"  {name:8s} SDR {sdr(truth[name], stem):5.1f} dB "
                f"(constant-gain baseline {baseline:4.1f} dB)  {path}"
            )
    error = float(np.max(np.abs(total - mix)))
    print(f"Stems sum back to the clip within {error:.1e} (float32 rounding).")
    return 0


def _run_models(_args: argparse.Namespace) -> int:
    from daw_bridge.models.catalog import MODELS
    from daw_bridge.models.msst.catalog import MSST_MODELS
    from daw_bridge.models.weights import cache_dir, resolve_weights

    width = max(map(len, [*MODELS, *MSST_MODELS])) + 2
    pad = " " * width

    for spec in MODELS.values():
        try:
            paths = resolve_weights(spec, download=False, progress=False)
            where = ", ".join(str(path) for path in paths)
        except ModelUnavailableError:
            where = "not downloaded yet (fetched on first use)"
        print(f"{spec.name:{width}s}{spec.description}\n{pad}weights: {where}")
    for entry in MSST_MODELS.values():
        scores = "; ".join(f"{s.stem} {s.sdr:.2f} dB ({s.ruler})" for s in entry.scores)
        local = cache_dir() / entry.checkpoint.filename
        where = str(local) if local.is_file() else "not downloaded yet (fetched on first use)"
        print(f"{entry.name:{width}s}{entry.description}")
        print(f"{pad}by {entry.author}; licence: {entry.licence}")
        if scores:
            print(f"{pad}published: {scores}")
        print(f"{pad}weights: {where}")
    print(f"{'dsp':{width}s}classical separator, no weights (low quality)")
    print(f"Download folder: {cache_dir()}")
    _print_ensembles()
    return 0


def _print_ensembles() -> None:
    """Named ensembles in a section of their own: what each runs, or why its file is broken."""
    from daw_bridge.separation.ensemble_library import describe_all, user_dir

    described = describe_all()
    print(f"\nEnsembles (--model NAME; your own .toml files go in {user_dir()}):")
    width = max((len(entry.name) for entry, _, _ in described), default=0) + 2
    pad = " " * width
    for entry, ensemble, problem in described:
        origin = "" if entry.origin == "built-in" else f" ({entry.origin}: {entry.path})"
        if ensemble is None:
            print(f"{entry.name:{width}s}BROKEN{origin}: {problem}")
            continue
        print(f"{entry.name:{width}s}{ensemble.description}{origin}")
        print(f"{pad}runs: {ensemble.spec}")


def _run_midi(args: argparse.Namespace) -> int:
    from daw_bridge.audio.io import read_span
    from daw_bridge.files import check_output_folder, ensure_writable
    from daw_bridge.midi.convert import stem_to_midi

    out = args.out or args.stem.with_suffix(".mid")
    check_output_folder(out.parent)  # before the transcription, not after it
    ensure_writable(out, args.overwrite)
    span = read_span(args.stem)
    notes = stem_to_midi(
        span.samples, span.samplerate, args.kind, out, args.min_note, args.overwrite
    )
    print(f"{len(notes)} notes from {args.stem} ({args.kind}) -> {out}")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    import contextlib

    from daw_bridge.server.server import Server, default_state_dir

    with contextlib.ExitStack() as stack:
        cluster = None
        if args.ray:  # jobs still come over ZeroMQ; their separations run on the cluster
            from daw_bridge.cluster.options import open_pool

            cluster = stack.enter_context(open_pool(args))
        Server(
            args.bind,
            args.model,
            args.device,
            args.state_dir or default_state_dir(),
            model_dir=args.model_dir,
            cache_bytes=args.cache_size_mb * 2**20,
            max_message_bytes=args.max_message_mb * 2**20,
            model_memory_bytes=args.model_memory_mb * 2**20,
            backend=args.backend,
            keep_days=args.keep_days,
            keep_jobs=args.keep_jobs,
            cluster=cluster,
        ).serve_forever()
    return 0


def _run_client(args: argparse.Namespace) -> int:
    import json

    from daw_bridge.client.client import connect
    from daw_bridge.client.status_file import write_status

    if args.action not in ("split", "apply"):
        client = connect(args.server, args.timeout)
        if args.action == "shutdown":
            client.shutdown()
            print(f"The server at {args.server} is shutting down.")
            return 0
        if args.action in ("cancel", "result"):
            reply = getattr(client, args.action)(args.job)
        else:
            reply = getattr(client, args.action)()
        print(json.dumps(reply, indent=2))
        return 0

    shown: list[str] = []

    def on_event(event: dict) -> None:
        if args.status_file is not None:
            write_status(args.status_file, event)
        line = f"{event['state']} {100 * event['progress']:.0f}%"
        if not args.quiet and line not in shown[-1:]:  # heartbeats repeat the same state
            shown.append(line)
            print(line, flush=True)

    remote = False
    if args.action == "apply":
        client = connect(args.server, args.timeout)
        job = client.apply(args.job, args.preset, tail=args.tail)
    else:
        from daw_bridge.files import check_output_folder
        from daw_bridge.protocol import is_local

        out = args.out or Path("separated") / args.input.stem
        remote = args.send_bytes or not is_local(args.server)
        if remote:  # the stems come here: refused now, not after the separation
            check_output_folder(out)
        client = connect(args.server, args.timeout, args.autostart, args.server_log)
        submit = client.submit_file if remote else partial(client.submit, out_dir=out)
        job = submit(
            args.input,
            start=args.start,
            duration=args.duration,
            model=args.model,
            two_stems=args.two_stems,
            format=args.format,
            overwrite=args.overwrite or None,
            midi=parse_kinds(args.midi) or None,
            keep=parse_kinds(args.keep) or None,
            drum_kit=args.drum_kit,
            preset=args.preset,
            tail=args.tail,
        )
    if not args.quiet:
        print(f"job {job}", flush=True)
    try:
        final = client.wait(job, on_event)
    except KeyboardInterrupt:
        client.cancel(job)
        raise
    if final["state"] != "done":
        error = final.get("error") or {}
        raise DawBridgeError(
            error.get("problem") or f"The job was {final['state']}.", error.get("fix") or None
        )
    if args.action == "split" and remote:  # the stems come back as bytes, checked
        final = {**final, "result": client.download(final, out, overwrite=args.overwrite)}
        if args.status_file is not None:
            write_status(args.status_file, final)
    for name, path in final["result"]["stems"].items():
        print(f"  {name:10s} {path}")
    for kind, path in final["result"].get("midi", {}).items():
        print(f"  {kind + ' MIDI':10s} {path}")
    for name, path in final["result"].get("processed", {}).items():
        print(f"  {name + ' (' + final['result']['preset'] + ')':10s} {path}")
    return 0


def _run_keys(args: argparse.Namespace) -> int:
    from daw_bridge import keys

    if args.keys_action == "allow":
        key = keys.allow(args.key, args.label)
        print(f"Clients with the key '{key}' may now use this machine's server (not as owner).")
    elif args.keys_action == "trust":
        key = keys.trust(args.address, args.key)
        print(f"The server at {args.address} must now prove it holds the key '{key}'.")
    elif args.keys_action == "revoke":
        if not keys.revoke(args.key):
            raise DawBridgeError(
                f"{args.key!r} is neither an allowed client key nor a known server's key.",
                "See `daw-bridge keys show`.",
            )
        print(f"Forgot '{args.key}'; a client with it is refused from its next request.")
    else:
        server, client = keys.server_pair().public, keys.client_pair().public
        print(f"Keys in {keys.keys_dir()} (readable by you only):")
        print(f"  server key '{server}'")
        print(f"    for clients elsewhere: daw-bridge keys trust tcp://THIS-HOST:PORT '{server}'")
        print(f"  client key '{client}'")
        print(f"    for servers elsewhere: daw-bridge keys allow '{client}'")
        allowed, servers = keys.allowed_keys(), keys.trusted_servers()
        print(f"Clients of other machines allowed here: {len(allowed) or 'none'}")
        for key, label in allowed.items():
            print(f"  '{key}' {label}".rstrip())
        print(f"Servers of other machines known here: {len(servers) or 'none'}")
        for address, key in servers.items():
            print(f"  {address} '{key}'")
    return 0


def _run_presets(args: argparse.Namespace) -> int:
    from daw_bridge.presets import library

    if args.presets_action == "list":
        for entry in library.available():
            try:
                description = library.load(entry.name).description
            except DawBridgeError:
                description = f"(invalid: see `daw-bridge presets validate {entry.name}`)"
            print(f"{entry.name:18s} {entry.origin:8s} {description}")
        print(f"Your own presets go in {library.user_dir()} (or pass a .toml file's path).")
        return 0
    if args.presets_action == "show":
        path = library.find(args.preset)
        library.load(args.preset)  # an invalid preset is reported, not shown as usable
        print(f"# {path}")
        print(path.read_text(encoding="utf-8"), end="")
        return 0
    failed = 0
    for reference in args.preset:
        try:
            preset = library.load(reference)
        except DawBridgeError as error:
            failed += 1
            _print_error(error)
            continue
        external = len(preset.external_plugins)
        note = f"; {external} VST3/AU plugin(s), checked when applied" if external else ""
        print(f"OK {reference}: preset {preset.name!r}, stems {', '.join(preset.stems)}{note}")
    return EXIT_USER_ERROR if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="daw-bridge: %(levelname)s: %(message)s",
    )
    from daw_bridge.batch import run_batch
    from daw_bridge.reaper import commands as reaper_commands

    runners = {
        "split": _run_split,
        "batch": run_batch,
        "demo": _run_demo,
        "models": _run_models,
        "midi": _run_midi,
        "serve": _run_serve,
        "client": _run_client,
        "presets": _run_presets,
        "keys": _run_keys,
        "install-reaper": reaper_commands.run_install,
        "reaper": reaper_commands.run_reaper,
    }
    try:
        return runners[args.command](args)
    except DawBridgeError as error:
        _print_error(error)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("daw-bridge: interrupted; no partial stems were left behind.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
