"""Find, download and verify pretrained model weights.

demucs fetches its checkpoints through ``torch.hub`` or ``huggingface_hub``,
which fail offline with a bare traceback, can leave a half-written file behind
and say nothing about where a file could be put by hand. Here each checkpoint is
looked up, in order:

1. the folder given as ``model_dir`` (``--model-dir``), else ``$DAW_BRIDGE_MODEL_DIR``;
2. our own cache, ``platformdirs.user_cache_dir("daw-bridge")/models``
   (``$DAW_BRIDGE_CACHE_DIR`` overrides it);
3. the torch hub cache, where demucs up to 4.0 keeps the ``.th`` files;
4. the Hugging Face cache, where demucs 4.1 keeps the ``.safetensors`` files
   (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), so an
   existing demucs user never downloads them twice;
5. otherwise it is downloaded into our cache: from the Hugging Face hub first,
   then from Meta's server. The hub first, because it is where demucs 4.1, the
   maintained release, downloads from, and because a ``.safetensors`` file holds
   no pickle at all, so nothing in it could run code even if our loader had a
   hole. Meta's ``.th`` files are the fallback (and the only source for a model
   whose hub file we have not pinned).

Every file is checked against its pinned SHA-256 (the full hash for hub files,
the prefix in the name for ``.th`` files) and its size when known, whether found
or downloaded. A download streams into a temporary file in the cache folder
that is renamed into place only once verified, so a partial or wrong file never
appears under the final name. Every failure is a :class:`ModelUnavailableError`
that names the file, its URLs and the folder to put it in by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import platformdirs
from tqdm import tqdm

from daw_bridge import __version__
from daw_bridge.errors import ModelUnavailableError
from daw_bridge.files import file_sha256
from daw_bridge.models.catalog import Download, ModelFile, ModelSpec, get_spec

log = logging.getLogger(__name__)
MODEL_DIR_ENV = "DAW_BRIDGE_MODEL_DIR"
CACHE_DIR_ENV = "DAW_BRIDGE_CACHE_DIR"

_TIMEOUT_S = 30
_CHUNK = 1 << 20
_DSP_HINT = "Or separate with --model dsp, which needs no weights."


def cache_dir() -> Path:
    """Where daw-bridge downloads weights to (``$DAW_BRIDGE_CACHE_DIR`` overrides)."""
    override = _env_path(CACHE_DIR_ENV)
    if override is not None:
        return override
    return Path(platformdirs.user_cache_dir("daw-bridge", appauthor=False)) / "models"


def resolve_weights(
    model: str | ModelSpec,
    *,
    model_dir: Path | str | None = None,
    download: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Return a verified local path for each checkpoint of ``model``, in order.

    ``model`` is a catalog name such as ``"htdemucs"`` or a :class:`ModelSpec`.
    ``model_dir`` (else ``$DAW_BRIDGE_MODEL_DIR``) is searched first. Missing files
    are downloaded into :func:`cache_dir` unless ``download`` is False; ``progress``
    shows a byte progress bar on stderr. Raises :class:`ModelUnavailableError`.
    """
    spec = get_spec(model) if isinstance(model, str) else model
    user_dir = Path(model_dir).expanduser() if model_dir is not None else _env_path(MODEL_DIR_ENV)
    if user_dir is not None and not user_dir.is_dir():
        raise ModelUnavailableError(
            f"The model folder {user_dir} (from --model-dir or ${MODEL_DIR_ENV}) "
            "does not exist or is not a folder.",
            f"Fix the path, or create the folder and put the weights of model {spec.name!r} "
            f"in it, downloaded by hand from {', '.join(f.url for f in spec.files)}. {_DSP_HINT}",
        )
    hand_dir = user_dir or cache_dir()
    return [
        _resolve_file(spec, file, user_dir, hand_dir, download, progress) for file in spec.files
    ]


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def _torch_hub_checkpoints() -> Path:
    """``torch.hub.get_dir()/checkpoints``, computed the same way without importing torch."""
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.environ.get("TORCH_HOME", os.path.join(xdg, "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def _hugging_face_cache() -> Path:
    """The hub cache folder, computed as ``huggingface_hub`` does, without importing it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("HF_HOME", os.path.join(xdg, "huggingface"))
    return Path(os.path.expanduser(home)) / "hub"


def _hub_snapshots(repo: str) -> Path:
    """Where ``huggingface_hub`` keeps the files of model repository ``repo``."""
    return _hugging_face_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"


def _search_dirs(user_dir: Path | None) -> list[Path]:
    dirs = [user_dir, cache_dir(), _torch_hub_checkpoints()]
    return list(dict.fromkeys(d for d in dirs if d is not None))


def _local_copies(
    spec: ModelSpec, file: ModelFile, user_dir: Path | None
) -> Iterator[tuple[Path, Download]]:
    """Every place a copy of ``file`` may already be, in the order they are preferred."""
    downloads = spec.downloads(file)
    for folder in _search_dirs(user_dir):
        for source in downloads:
            yield folder / source.filename, source
    hub = file.hub(spec.hub_repo)
    if hub is not None and spec.hub_repo is not None:
        snapshots = _hub_snapshots(spec.hub_repo)
        # Any snapshot will do: the pinned SHA-256 decides, not the revision.
        for path in sorted(snapshots.glob(f"*/{hub.filename}")):
            yield path, hub


def _resolve_file(
    spec: ModelSpec,
    file: ModelFile,
    user_dir: Path | None,
    hand_dir: Path,
    download: bool,
    progress: bool,
) -> Path:
    for candidate, source in _local_copies(spec, file, user_dir):
        if candidate.is_file():
            _verify_local(spec, file, source, candidate)
            return candidate
    if not download:
        searched = [*_search_dirs(user_dir)]
        if spec.hub_repo is not None and file.hub(spec.hub_repo) is not None:
            searched.append(_hub_snapshots(spec.hub_repo))
        raise ModelUnavailableError(
            f"The weights of model {spec.name!r} (file {file.filename}) are not on this "
            f"computer, and downloading is turned off. Looked in: "
            f"{', '.join(str(d) for d in searched)}.",
            f"Allow downloading, or {_by_hand(spec, file, hand_dir)}",
        )
    failures: list[str] = []
    downloads = spec.downloads(file)
    for number, source in enumerate(downloads, start=1):
        target = cache_dir() / source.filename
        try:
            _download(
                spec.name,
                source,
                target,
                progress,
                lambda exc, target=target: _cache_error(spec, file, target, hand_dir, exc),
            )
            return target
        except _DownloadFailed as failure:
            failures.append(f"from {source.url}: {failure}")
            if number < len(downloads):
                log.warning(
                    "Could not download %s from %s (%s); trying %s instead.",
                    source.filename,
                    source.url,
                    failure,
                    downloads[number].url,
                )
    raise ModelUnavailableError(
        f"Could not download the weights of model {spec.name!r} (file {file.filename}) "
        + "; nor ".join(failures)
        + ".",
        f"Nothing was saved. Check your internet connection and run again, or "
        f"{_by_hand(spec, file, hand_dir)}",
    )


def _by_hand(spec: ModelSpec, file: ModelFile, hand_dir: Path) -> str:
    """The manual fix: which file, from where, to which folder, and the alternatives."""
    text = (
        f"download {file.url} by hand (in a browser, or on another computer) and save it as "
        f"{hand_dir / file.filename}"
    )
    hub = file.hub(spec.hub_repo)
    if hub is not None:
        text += f" (or its Hugging Face copy {hub.url}, saved as {hand_dir / hub.filename})"
    text += f"; any folder works if you pass it with --model-dir or set ${MODEL_DIR_ENV}."
    if len(spec.files) > 1:
        names = ", ".join(f.filename for f in spec.files)
        text += f" Model {spec.name!r} needs all {len(spec.files)} files: {names}."
    return f"{text} {_DSP_HINT}"


def _verify_local(spec: ModelSpec, file: ModelFile, source: Download, path: Path) -> None:
    actual_size = path.stat().st_size
    if source.size is not None and actual_size != source.size:
        problem = f"it is {actual_size:,} bytes but should be {source.size:,} bytes"
    else:
        digest = file_sha256(path)
        if digest.startswith(source.sha256):
            return
        problem = _wrong_hash(digest, source)
    raise ModelUnavailableError(
        f"The weights file {path} of model {spec.name!r} is damaged or incomplete: {problem}.",
        f"Delete {path} and run again to download a fresh copy into {cache_dir()}, or "
        + _by_hand(spec, file, path.parent),
    )


def _wrong_hash(digest: str, source: Download) -> str:
    if len(source.sha256) == len(digest):
        return f"its SHA-256 is {digest} but should be {source.sha256}"
    return (
        f"its SHA-256 starts with {digest[: len(source.sha256)]} "
        f"but should start with {source.sha256}"
    )


class _DownloadFailed(Exception):
    """A download from one source failed (network or content); another source may work."""


def _download(
    label: str,
    source: Download,
    target: Path,
    progress: bool,
    cache_error: Callable[[OSError], ModelUnavailableError],
) -> None:
    """Stream ``source`` into ``target``, renamed into place only once its size and
    SHA-256 (where known) check out; ``cache_error`` words a failure to save it."""
    request = urllib.request.Request(
        source.url, headers={"User-Agent": f"daw-bridge/{__version__}"}
    )
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except (OSError, http.client.HTTPException) as exc:  # URLError/HTTPError are OSErrors
        raise _DownloadFailed(_reason(exc)) from exc

    with response:
        announced = _content_length(response)
        if source.size is not None and announced is not None and announced != source.size:
            raise _DownloadFailed(
                f"the server announced {announced:,} bytes, expected {source.size:,}"
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{source.filename}.", suffix=".part", dir=target.parent
            )
        except OSError as exc:
            raise cache_error(exc) from exc
        sha = hashlib.sha256()
        received = 0
        try:
            with (
                os.fdopen(fd, "wb") as out,
                tqdm(
                    total=announced or source.size,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=f"Downloading {label} ({source.filename})",
                    file=sys.stderr,
                    disable=not progress,
                ) as bar,
            ):
                for chunk in _stream(response):
                    out.write(chunk)
                    sha.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            expected = announced if announced is not None else source.size
            if expected is not None and received != expected:
                raise _DownloadFailed(
                    f"the download stopped early, after {received:,} of {expected:,} bytes"
                )
            digest = sha.hexdigest()
            if not digest.startswith(source.sha256):
                raise _DownloadFailed(
                    f"the received data is not {source.filename}: {_wrong_hash(digest, source)} "
                    f"(a broken download, or a mirror set with $DAW_BRIDGE_MODEL_URL or "
                    f"$HF_ENDPOINT serving the wrong file)"
                )
            os.replace(tmp_name, target)
        except OSError as exc:  # network errors were already turned into ours by _stream
            raise cache_error(exc) from exc
        finally:
            with suppress(FileNotFoundError):  # gone already once renamed into place
                os.unlink(tmp_name)


def _stream(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The body in chunks; a broken connection becomes :class:`_DownloadFailed`."""
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise _DownloadFailed(f"the connection broke: {_reason(exc)}") from exc
        if not chunk:
            return
        yield chunk


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"the server could not be reached ({exc.reason})"
    return str(exc) or type(exc).__name__


def _cache_error(
    spec: ModelSpec, file: ModelFile, target: Path, hand_dir: Path, exc: OSError
) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Could not save the weights of model {spec.name!r} as {target}: {exc}.",
        f"Free some disk space or make {target.parent} writable (or set ${CACHE_DIR_ENV} "
        f"to another folder), then run again; or {_by_hand(spec, file, hand_dir)}",
    )


def fetch(
    source: Download,
    label: str,
    *,
    model_dir: Path | str | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """A verified local copy of one published file (an MSST checkpoint or config).

    Looked for in ``model_dir`` (else ``$DAW_BRIDGE_MODEL_DIR``) and in our cache,
    else downloaded into the cache. A file whose author published no SHA-256 is
    recorded when first seen (``<file>.sha256`` beside it) and checked against that
    record from then on, so a damaged or swapped copy is still noticed.
    """
    user_dir = Path(model_dir).expanduser() if model_dir is not None else _env_path(MODEL_DIR_ENV)
    hand_dir = user_dir or cache_dir()
    by_hand = (
        f"download {source.url} by hand (in a browser, or on another computer) and save it as "
        f"{hand_dir / source.filename}; any folder works if you pass it with --model-dir or "
        f"set ${MODEL_DIR_ENV}. {_DSP_HINT}"
    )
    for folder in [user_dir, cache_dir()]:
        path = folder / source.filename if folder is not None else None
        if path is not None and path.is_file():
            _check_copy(source, label, path, by_hand)
            return path
    if not download:
        raise ModelUnavailableError(
            f"The file {source.filename} of {label} is not on this computer, and downloading "
            "is turned off.",
            f"Allow downloading, or {by_hand}",
        )
    target = cache_dir() / source.filename

    def cache_error(exc: OSError) -> ModelUnavailableError:
        return ModelUnavailableError(
            f"Could not save {source.filename} of {label} as {target}: {exc}.",
            f"Free some disk space or make {target.parent} writable (or set ${CACHE_DIR_ENV} "
            f"to another folder), then run again; or {by_hand}",
        )

    try:
        _download(label, source, target, progress, cache_error)
    except _DownloadFailed as failure:
        raise ModelUnavailableError(
            f"Could not download {source.filename} of {label} from {source.url}: {failure}.",
            f"Nothing was saved. Check your internet connection and run again, or {by_hand}",
        ) from None
    if not source.sha256:  # checked while downloading where one is published
        _check_copy(source, label, target, by_hand)
    return target


def _check_copy(source: Download, label: str, path: Path, by_hand: str) -> None:
    """Size and SHA-256 against the published ones, or against the first copy's record."""
    if source.size is not None and path.stat().st_size != source.size:
        problem = f"it is {path.stat().st_size:,} bytes but should be {source.size:,} bytes"
    else:
        digest = file_sha256(path)
        record = path.with_name(path.name + ".sha256")
        expected = source.sha256
        if not expected and record.is_file():
            expected = record.read_text(encoding="utf-8").strip()
        if not expected:  # the first copy: its hash is the record from now on
            log.warning(
                "%s: no SHA-256 is published for %s; recorded %s in %s.",
                label,
                source.filename,
                digest,
                record,
            )
            with suppress(OSError):
                record.write_text(digest + "\n", encoding="utf-8")
            return
        if digest.startswith(expected):
            return
        problem = _wrong_hash(digest, Download(source.filename, source.url, None, expected))
    raise ModelUnavailableError(
        f"The file {path} of {label} is damaged or incomplete: {problem}.",
        f"Delete {path} and run again to download a fresh copy, or {by_hand}",
    )
