"""Finding, downloading and verifying model weights.

Downloads run against a real HTTP server on 127.0.0.1 serving a tiny but real
demucs checkpoint, so the whole path (HTTP, hashing, atomic rename, loading with
demucs) is exercised without internet. All caches point into ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import pytest
import yaml

from daw_bridge.errors import ModelUnavailableError
from daw_bridge.models.catalog import (
    MODELS,
    OFFICIAL_BASE_URL,
    Download,
    ModelFile,
    ModelSpec,
    get_spec,
)
from daw_bridge.models.loader import load_checkpoint
from daw_bridge.models.weights import fetch, resolve_weights
from tests.conftest import (
    free_port,
    save_checkpoint,
    save_hub_safetensors,
    sha256_of,
    tiny_htdemucs,
)

SOURCES = ["drums", "bass", "other", "vocals"]


# --------------------------------------------------------------------------- fixtures


class Server:
    """A real HTTP server in a background thread; records the paths requested."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Recording(handler):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()


def _serving(folder: Path) -> type[BaseHTTPRequestHandler]:
    class Files(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

    return Files


def _truncating(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Truncating(BaseHTTPRequestHandler):
        """Announces the whole body, sends half of it, then hangs up."""

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])

    return Truncating


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny real HTDemucs checkpoints, named ``<sig>-<sha256[:8]>.th`` by demucs."""
    folder = tmp_path_factory.mktemp("served")
    model = tiny_htdemucs()
    return [save_checkpoint(model, folder, sig, half=True) for sig in ("abcd1234", "ef567890")]


@pytest.fixture
def checkpoint(checkpoints: list[Path]) -> Path:
    return checkpoints[0]


@pytest.fixture
def tiny(checkpoint: Path) -> ModelSpec:
    """A test-only model made of the tiny checkpoint (not in the public catalog)."""
    return ModelSpec(name="tiny", files=(ModelFile(checkpoint.name),))


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real caches: every folder we look in lives in tmp_path."""
    monkeypatch.delenv("DAW_BRIDGE_MODEL_DIR", raising=False)
    monkeypatch.delenv("DAW_BRIDGE_MODEL_URL", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("DAW_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def server(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """Serves the tiny checkpoints; DAW_BRIDGE_MODEL_URL points at it."""
    srv = Server(_serving(checkpoint.parent))
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", srv.url)
    yield srv
    srv.stop()


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> str:
    """DAW_BRIDGE_MODEL_URL points at a closed port: any download attempt fails."""
    url = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", url)
    return url


def _all_files(folder: Path) -> list[str]:
    """Every file left in ``folder``, hidden temporary files included."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --------------------------------------------------------------------------- downloading


def test_missing_weights_are_downloaded_into_the_cache_byte_for_byte(
    tiny: ModelSpec, checkpoint: Path, server: Server, cache: Path
) -> None:
    paths = resolve_weights(tiny, progress=False)

    assert paths == [cache / checkpoint.name]
    assert paths[0].read_bytes() == checkpoint.read_bytes()
    assert _all_files(cache) == [checkpoint.name]  # no temporary file left behind
    assert server.requests == [f"/{checkpoint.name}"]


def test_downloaded_weights_load_as_a_demucs_model(tiny: ModelSpec, server: Server) -> None:
    from demucs.htdemucs import HTDemucs
    from demucs.states import load_model

    (path,) = resolve_weights(tiny, progress=False)
    model = load_model(path)

    assert isinstance(model, HTDemucs)
    assert list(model.sources) == SOURCES


def test_download_shows_a_byte_progress_bar_on_stderr(
    tiny: ModelSpec, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    resolve_weights(tiny, progress=True)

    err = capsys.readouterr().err
    assert "Downloading tiny" in err
    assert "kB" in err or "B/s" in err


def test_a_second_resolve_uses_the_cache_without_network(tiny: ModelSpec, server: Server) -> None:
    first = resolve_weights(tiny, progress=False)
    server.stop()

    assert resolve_weights(tiny, progress=False) == first


def test_a_bag_resolves_one_path_per_file_in_order(
    checkpoints: list[Path], server: Server, cache: Path, tmp_path: Path
) -> None:
    bag = ModelSpec(name="tiny_bag", files=tuple(ModelFile(p.name) for p in checkpoints))
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(checkpoints[1], mine)

    paths = resolve_weights(bag, model_dir=mine, progress=False)

    assert paths == [cache / checkpoints[0].name, mine / checkpoints[1].name]
    assert server.requests == [f"/{checkpoints[0].name}"]


# --------------------------------------------------------------------------- where files are found


@pytest.mark.parametrize("given_as", ["argument", "environment"])
def test_model_dir_takes_precedence_over_the_caches(
    given_as: str,
    tiny: ModelSpec,
    checkpoint: Path,
    cache: Path,
    hub: Path,
    tmp_path: Path,
    unreachable: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = tmp_path / "my models"
    for folder in (mine, cache, hub):
        folder.mkdir(parents=True)
        shutil.copy(checkpoint, folder)

    if given_as == "argument":
        paths = resolve_weights(tiny, model_dir=mine)
    else:
        monkeypatch.setenv("DAW_BRIDGE_MODEL_DIR", str(mine))
        paths = resolve_weights(tiny)

    assert paths == [mine / checkpoint.name]


def test_our_cache_comes_before_the_torch_hub_cache(
    tiny: ModelSpec, checkpoint: Path, cache: Path, hub: Path, unreachable: str
) -> None:
    for folder in (cache, hub):
        folder.mkdir(parents=True)
        shutil.copy(checkpoint, folder)

    assert resolve_weights(tiny) == [cache / checkpoint.name]


def test_weights_demucs_already_downloaded_to_torch_hub_are_reused(
    tiny: ModelSpec, checkpoint: Path, hub: Path, cache: Path, unreachable: str
) -> None:
    hub.mkdir(parents=True)
    shutil.copy(checkpoint, hub)

    assert resolve_weights(tiny) == [hub / checkpoint.name]
    assert _all_files(cache) == []


def test_torch_hub_cache_follows_xdg_cache_home_like_torch_does(
    tiny: ModelSpec,
    checkpoint: Path,
    tmp_path: Path,
    unreachable: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch.hub

    monkeypatch.delenv("TORCH_HOME")
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    assert hub == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(checkpoint, hub)

    assert resolve_weights(tiny) == [hub / checkpoint.name]


def test_a_missing_model_dir_is_reported(tiny: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError) as error:
        resolve_weights(tiny, model_dir=tmp_path / "typo")

    message = str(error.value)
    assert str(tmp_path / "typo") in message
    assert "does not exist" in message
    assert "--model dsp" in message


# --------------------------------------------------------------------------- failures


def test_a_truncated_download_is_an_error_and_leaves_no_file(
    tiny: ModelSpec, checkpoint: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = Server(_truncating(checkpoint.read_bytes()))
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", srv.url)
    try:
        with pytest.raises(ModelUnavailableError) as error:
            resolve_weights(tiny, progress=False)
    finally:
        srv.stop()

    message = str(error.value)
    assert "stopped early" in message
    assert checkpoint.name in message
    assert srv.url + checkpoint.name in message
    assert _all_files(cache) == []


def test_wrong_content_is_an_error_naming_the_file_and_leaves_nothing(
    tiny: ModelSpec, checkpoint: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad mirror"
    bad.mkdir()
    (bad / checkpoint.name).write_bytes(b"not a checkpoint" * 100)
    srv = Server(_serving(bad))
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", srv.url)
    try:
        with pytest.raises(ModelUnavailableError) as error:
            resolve_weights(tiny, progress=False)
    finally:
        srv.stop()

    message = str(error.value)
    assert checkpoint.name in message
    assert "SHA-256" in message
    assert tiny.files[0].sha256_prefix in message
    assert _all_files(cache) == []


def test_a_server_announcing_the_wrong_size_is_an_error(
    checkpoint: Path, server: Server, cache: Path
) -> None:
    size = checkpoint.stat().st_size
    spec = ModelSpec(name="tiny", files=(ModelFile(checkpoint.name, size=size + 1),))

    with pytest.raises(ModelUnavailableError, match=f"announced {size:,} bytes"):
        resolve_weights(spec, progress=False)
    assert _all_files(cache) == []


def test_http_404_is_an_error_with_the_url(
    tiny: ModelSpec, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty mirror"
    empty.mkdir()
    srv = Server(_serving(empty))
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", srv.url)
    try:
        with pytest.raises(ModelUnavailableError) as error:
            resolve_weights(tiny, progress=False)
    finally:
        srv.stop()

    message = str(error.value)
    assert "HTTP 404" in message
    assert srv.url + checkpoint.name in message


def test_offline_says_where_to_put_the_file_by_hand(
    tiny: ModelSpec, checkpoint: Path, cache: Path, unreachable: str
) -> None:
    with pytest.raises(ModelUnavailableError) as error:
        resolve_weights(tiny, progress=False)

    err = error.value
    assert "could not be reached" in err.problem
    assert unreachable + checkpoint.name in err.problem
    assert err.fix is not None
    assert str(cache / checkpoint.name) in err.fix
    assert "--model-dir" in err.fix
    assert "DAW_BRIDGE_MODEL_DIR" in err.fix
    assert "--model dsp" in err.fix


def test_offline_with_a_model_dir_suggests_that_folder(
    tiny: ModelSpec, checkpoint: Path, tmp_path: Path, unreachable: str
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()

    with pytest.raises(ModelUnavailableError) as error:
        resolve_weights(tiny, model_dir=mine, progress=False)

    assert str(mine / checkpoint.name) in str(error.value.fix)


def test_a_corrupt_file_in_model_dir_is_reported_not_silently_replaced(
    tiny: ModelSpec, checkpoint: Path, tmp_path: Path, server: Server
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    corrupt = mine / checkpoint.name
    corrupt.write_bytes(checkpoint.read_bytes()[:-10] + b"0123456789")

    with pytest.raises(ModelUnavailableError) as error:
        resolve_weights(tiny, model_dir=mine, progress=False)

    message = str(error.value)
    assert str(corrupt) in message
    assert "damaged" in message
    assert "SHA-256" in message
    assert tiny.files[0].url in message
    assert server.requests == []


def test_a_file_of_the_wrong_known_size_is_reported(
    checkpoint: Path, cache: Path, unreachable: str
) -> None:
    size = checkpoint.stat().st_size
    spec = ModelSpec(name="tiny", files=(ModelFile(checkpoint.name, size=size),))
    cache.mkdir()
    (cache / checkpoint.name).write_bytes(checkpoint.read_bytes()[: size // 2])

    with pytest.raises(ModelUnavailableError, match=f"should be {size:,} bytes"):
        resolve_weights(spec)


def test_download_false_raises_without_touching_the_network(
    tiny: ModelSpec, checkpoint: Path, cache: Path, server: Server
) -> None:
    with pytest.raises(ModelUnavailableError) as error:
        resolve_weights(tiny, download=False)

    message = str(error.value)
    assert "downloading is turned off" in message
    assert str(cache / checkpoint.name) in message
    assert server.url + checkpoint.name in message
    assert server.requests == []


# --------------------------------------------------------------------------- the Hugging Face hub

HUB_REPO = "someone/Tiny"


@pytest.fixture(scope="module")
def hub_copy(checkpoints: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint as demucs 4.1's hub publishes it: ``<signature>.safetensors``."""
    return save_hub_safetensors(checkpoints[0], tmp_path_factory.mktemp("hub"))


@pytest.fixture
def tiny_on_hub(checkpoint: Path, hub_copy: Path) -> ModelSpec:
    file = ModelFile(
        checkpoint.name, hub_sha256=sha256_of(hub_copy), hub_size=hub_copy.stat().st_size
    )
    return ModelSpec(name="tiny", files=(file,), hub_repo=HUB_REPO)


def _hub_and_meta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_file: bytes | None, th_file: Path
) -> Server:
    """One local server playing both the hub (``HF_ENDPOINT``) and Meta's server."""
    root = tmp_path / "served"
    if hub_file is not None:
        folder = root / HUB_REPO / "resolve" / "main"
        folder.mkdir(parents=True)
        (folder / f"{th_file.name.split('-')[0]}.safetensors").write_bytes(hub_file)
    root.mkdir(exist_ok=True)
    shutil.copy(th_file, root)
    srv = Server(_serving(root))
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", srv.url)
    return srv


def test_the_hub_copy_is_downloaded_first_verified_and_loads(
    tiny_on_hub: ModelSpec,
    hub_copy: Path,
    checkpoint: Path,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv = _hub_and_meta(tmp_path, monkeypatch, hub_copy.read_bytes(), checkpoint)
    try:
        (path,) = resolve_weights(tiny_on_hub, progress=False)
    finally:
        srv.stop()

    assert path == cache / hub_copy.name
    assert path.read_bytes() == hub_copy.read_bytes()
    assert srv.requests == [f"/{HUB_REPO}/resolve/main/{hub_copy.name}"]
    assert _all_files(cache) == [hub_copy.name]
    hub_model, th_model = load_checkpoint(path), load_checkpoint(checkpoint)
    for key, value in th_model.state_dict().items():
        assert (hub_model.state_dict()[key] == value).all(), key


@pytest.mark.parametrize("hub_serves", ["nothing", "the wrong file"])
def test_when_the_hub_fails_the_th_file_is_downloaded_and_the_user_told(
    hub_serves: str,
    tiny_on_hub: ModelSpec,
    hub_copy: Path,
    checkpoint: Path,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = None if hub_serves == "nothing" else hub_copy.read_bytes()[:-4] + b"oops"
    srv = _hub_and_meta(tmp_path, monkeypatch, wrong, checkpoint)
    try:
        paths = resolve_weights(tiny_on_hub, progress=False)
    finally:
        srv.stop()

    assert paths == [cache / checkpoint.name]
    assert _all_files(cache) == [checkpoint.name]  # nothing of the failed download is left
    assert srv.requests[-1] == f"/{checkpoint.name}" and len(srv.requests) == 2
    assert f"trying {srv.url}{checkpoint.name} instead" in caplog.text
    reason = "HTTP 404" if wrong is None else "SHA-256 is"
    assert reason in caplog.text


def test_when_every_source_fails_the_error_names_each_url_and_reason(
    tiny_on_hub: ModelSpec, checkpoint: Path, cache: Path, unreachable: str, monkeypatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", unreachable)

    with pytest.raises(ModelUnavailableError) as error:
        resolve_weights(tiny_on_hub, progress=False)

    hub_url = f"{unreachable}{HUB_REPO}/resolve/main/{checkpoint.name.split('-')[0]}.safetensors"
    assert hub_url in error.value.problem
    assert unreachable + checkpoint.name in error.value.problem
    assert error.value.problem.count("could not be reached") == 2
    assert hub_url in str(error.value.fix)  # the by-hand fix offers both copies
    assert _all_files(cache) == []


@pytest.mark.parametrize("located_by", ["HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"])
def test_weights_demucs_4_1_keeps_in_the_hugging_face_cache_are_reused(
    located_by: str,
    tiny_on_hub: ModelSpec,
    hub_copy: Path,
    cache: Path,
    tmp_path: Path,
    unreachable: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if located_by == "HF_HUB_CACHE":
        hub_cache = tmp_path / "hf"
    else:
        monkeypatch.delenv("HF_HUB_CACHE")
        if located_by == "HF_HOME":
            monkeypatch.setenv("HF_HOME", str(tmp_path / "hf home"))
            hub_cache = tmp_path / "hf home" / "hub"
        else:  # huggingface_hub's default: $XDG_CACHE_HOME/huggingface/hub
            hub_cache = tmp_path / "xdg" / "huggingface" / "hub"
    # The layout huggingface_hub writes: a blob named by its hash, linked from a snapshot.
    repo = hub_cache / "models--someone--Tiny"
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / sha256_of(hub_copy)
    shutil.copy(hub_copy, blob)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / hub_copy.name).symlink_to(Path("..", "..", "blobs", blob.name))

    assert resolve_weights(tiny_on_hub) == [snapshot / hub_copy.name]
    assert _all_files(cache) == []


def test_a_damaged_file_in_the_hugging_face_cache_is_reported(
    tiny_on_hub: ModelSpec, hub_copy: Path, tmp_path: Path, unreachable: str
) -> None:
    snapshot = tmp_path / "hf" / "models--someone--Tiny" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    damaged = snapshot / hub_copy.name
    damaged.write_bytes(hub_copy.read_bytes()[:-4] + b"oops")

    with pytest.raises(ModelUnavailableError) as error:
        resolve_weights(tiny_on_hub)

    assert str(damaged) in error.value.problem and "damaged" in error.value.problem
    assert f"should be {sha256_of(hub_copy)}" in error.value.problem
    assert f"Delete {damaged}" in str(error.value.fix)


# --------------------------------------------------------------------------- the catalog


def test_an_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelUnavailableError) as error:
        resolve_weights("htdemcus")

    message = str(error.value)
    assert "'htdemcus'" in message
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "dsp"):
        assert name in message
    with pytest.raises(ModelUnavailableError):
        get_spec("htdemcus")


def test_the_default_model_points_at_the_official_file() -> None:
    (file,) = get_spec("htdemucs").files

    assert (
        file.url == "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
    )
    assert file.sha256_prefix == "8726e21a"
    assert file.size == 84_141_911


def test_a_mirror_url_replaces_the_official_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", "http://mirror.example/demucs")

    assert get_spec("htdemucs").files[0].url == "http://mirror.example/demucs/955717e8-8726e21a.th"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_catalog_matches_the_installed_demucs_remote_files(name: str) -> None:
    remote = resources.files("demucs") / "remote"
    official = remote.joinpath("files.txt").read_text().split()
    bag = yaml.safe_load(remote.joinpath(f"{name}.yaml").read_text())
    spec = MODELS[name]

    assert spec.name == name
    assert [f.filename.split("-")[0] for f in spec.files] == bag["models"]
    assert all(f.filename in official for f in spec.files)
    assert all(f.url == OFFICIAL_BASE_URL + f.filename for f in spec.files)
    assert ([list(row) for row in spec.weights] if spec.weights else None) == bag.get("weights")
    assert spec.segment == bag.get("segment")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hub_copies_come_from_the_repositories_demucs_4_1_downloads_from(name: str) -> None:
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name

    spec = MODELS[name]

    assert spec.hub_repo == f"{DEFAULT_NAMESPACE}/{hf_repo_name(name)}"
    for file in spec.files:
        hub = file.hub(spec.hub_repo)
        if hub is None:  # hdemucs_mmi: its hub file's hash is not pinned, so the .th only
            assert spec.downloads(file) == [file.legacy]
            continue
        assert len(hub.sha256) == 64 and int(hub.sha256, 16) >= 0
        assert hub.url == f"https://huggingface.co/{spec.hub_repo}/resolve/main/{hub.filename}"
        assert spec.downloads(file) == [hub, file.legacy]


def test_the_default_model_comes_from_the_hub_first() -> None:
    spec = get_spec("htdemucs")
    hub, legacy = spec.downloads(spec.files[0])

    assert hub.url == "https://huggingface.co/adefossez/HTDemucs/resolve/main/955717e8.safetensors"
    assert hub.sha256 == "d9fa14133cfcc034a6758923bb3a8ca9f8dfd0b582134643bbf83f72c17576dd"
    assert hub.size == 84_025_440
    assert legacy.url == OFFICIAL_BASE_URL + "955717e8-8726e21a.th"


# ----------------------------------------------------- single published files (MSST models)


def _published(tmp_path: Path, body: bytes, sha256: str | None) -> tuple[Server, Download]:
    """``body`` served as model.ckpt on 127.0.0.1; its Download with or without a SHA-256."""
    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes(body)
    server = Server(_serving(folder))
    digest = hashlib.sha256(body).hexdigest() if sha256 is None else sha256
    return server, Download("model.ckpt", server.url + "model.ckpt", len(body), digest)


def test_fetch_downloads_a_published_file_once_and_checks_its_sha256(tmp_path, cache):
    server, source = _published(tmp_path, b"weights" * 1000, None)
    try:
        path = fetch(source, "model 'x'", progress=False)
        assert path == cache / "model.ckpt" and path.read_bytes() == b"weights" * 1000
        assert fetch(source, "model 'x'", progress=False) == path
        assert server.requests == ["/model.ckpt"]  # the second time from the cache
    finally:
        server.stop()


def test_fetch_refuses_a_download_whose_sha256_differs_and_keeps_nothing(tmp_path, cache):
    server, source = _published(tmp_path, b"not the weights", "0" * 64)
    try:
        with pytest.raises(ModelUnavailableError) as error:
            fetch(source, "model 'x'", progress=False)
    finally:
        server.stop()
    assert "model.ckpt" in error.value.problem and "SHA-256" in error.value.problem
    assert _all_files(cache) == []


def test_without_a_published_sha256_the_first_copy_is_recorded_and_a_swap_refused(tmp_path, cache):
    server, source = _published(tmp_path, b"first copy", "")
    source = Download(source.filename, source.url, None, "")
    try:
        path = fetch(source, "model 'x'", progress=False)
    finally:
        server.stop()
    record = path.with_name("model.ckpt.sha256")
    assert record.read_text().strip() == hashlib.sha256(b"first copy").hexdigest()
    path.write_bytes(b"another file")  # damaged, or swapped behind our back
    with pytest.raises(ModelUnavailableError, match="damaged or incomplete"):
        fetch(source, "model 'x'", progress=False)


def test_fetch_offline_says_where_to_put_the_file_by_hand(tmp_path, cache, unreachable):
    source = Download("model.ckpt", unreachable + "model.ckpt", None, "")
    with pytest.raises(ModelUnavailableError) as error:
        fetch(source, "model 'x'", progress=False)
    assert unreachable + "model.ckpt" in error.value.problem
    assert str(cache / "model.ckpt") in str(error.value.fix)
    assert "--model-dir" in str(error.value.fix)
