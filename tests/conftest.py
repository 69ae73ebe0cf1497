"""Shared test material: tiny real Demucs checkpoints and paths to shared data."""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

SOURCES = ["drums", "bass", "other", "vocals"]
SHARED = Path(__file__).resolve().parents[2] / "shared"
EVAL_SONGS = SHARED / "eval" / "musdb18-7-test"
SHARED_MODELS = SHARED / "models"


def tiny_htdemucs(seed: int = 0, segment: float = 1.0, sources: list[str] = SOURCES):
    """A small, fast HTDemucs with random weights: same code paths as the real one."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    model = HTDemucs(
        list(sources), channels=8, depth=3, t_layers=1, t_heads=2, nfft=1024,
        bottom_channels=0, segment=segment,
    )  # fmt: skip
    return model.eval()


def tiny_hdemucs(seed: int = 0):
    """A small HDemucs (``hdemucs_mmi``'s and the drum kit's class) with random weights."""
    import torch
    from demucs.hdemucs import HDemucs

    torch.manual_seed(seed)
    return HDemucs(list(SOURCES), channels=8, depth=4, nfft=1024, segment=1.0).eval()


def watch_istft(monkeypatch) -> list[float]:
    """The largest imaginary part at 0 Hz and Nyquist of every spectrum ``torch.istft`` is
    given from now on (a real signal's has none: daw_bridge/separation/spectrum.py)."""
    import torch

    largest: list[float] = []
    istft = torch.istft

    def watched(spectrum, *args, **kwargs):
        n_fft = kwargs["n_fft"] if "n_fft" in kwargs else args[0]
        has_nyquist = n_fft % 2 == 0 and spectrum.shape[-2] > n_fft // 2
        edges = spectrum[..., [0, n_fft // 2] if has_nyquist else [0], :]
        largest.append(edges.imag.abs().max().item())
        return istft(spectrum, *args, **kwargs)

    monkeypatch.setattr(torch, "istft", watched)
    return largest


def save_checkpoint(model, folder: Path, signature: str, half: bool = True) -> Path:
    """Save ``model`` exactly as Meta's release files were saved: ``<signature>-<sha[:8]>.th``.

    The release export step: demucs's ``serialize_model`` (fp16 state, plain-dict
    ``training_args``), then a sixth entry ``metrics = (valid, test)`` from the
    training history (``test`` holding numpy float64 values), then
    ``save_with_checksum``'s naming. Pickled as numpy 1.x pickled it in 2022:
    the scalars under ``numpy.core.multiarray.scalar``
    (tests/models/test_loader.py compares the pickle's globals with the
    official-format files in ../shared).
    """
    import hashlib
    import io

    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    package = serialize_model(model, OmegaConf.create(TRAINING_ARGS), half=half)
    if isinstance(model, HTDemucs):  # the export step stored htdemucs's segment as a Fraction
        package["kwargs"]["segment"] = Fraction(model.segment).limit_denominator(1000)
    package["metrics"] = official_metrics()
    buffer = io.BytesIO()
    torch.save(package, buffer, pickle_module=_Numpy1Pickle)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{signature}-{hashlib.sha256(buffer.getvalue()).hexdigest()[:8]}.th"
    path.write_bytes(buffer.getvalue())
    return path


#: A small stand-in for the ``training_args`` of the release files (an OmegaConf config).
TRAINING_ARGS = {
    "dset": {"musdb": "/data/musdb", "segment": 11},
    "epochs": 360,
    "optim": {"lr": 3e-4},
}


def official_metrics() -> tuple[dict, dict]:
    """``(valid, test)`` as the release files hold them: floats, and numpy float64 for test."""
    valid = {"loss": 0.0852, "main_loss": 0.0852, "nsdr": 7.91, "bestsdr": 8.02}
    test = {"nsdr": np.float64(9.2), "sdr": {"drums": np.float64(9.7), "vocals": np.float64(8.9)}}
    return valid, test


class _Numpy1Pickler(pickle._Pickler):
    """Names numpy's ``scalar`` the way numpy 1.x did (``numpy.core``, not ``numpy._core``)."""

    def save_global(self, obj, name=None):
        if obj is _numpy_scalar():
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _numpy_scalar():
    return (np._core if hasattr(np, "_core") else np.core).multiarray.scalar


class _Numpy1Pickle:
    """The ``pickle_module`` torch.save is given: only its Pickler is used."""

    Pickler = _Numpy1Pickler


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for servers, or to be refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tiny_htdemucs(), tmp_path_factory.mktemp("ckpt"), "0badc0de")


def write_wav(
    path: Path, samples: np.ndarray, samplerate: int = 44100, bit_depth: int = 32
) -> Path:
    from pedalboard.io import AudioFile

    samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    with AudioFile(str(path), "w", samplerate, samples.shape[0], bit_depth=bit_depth) as handle:
        handle.write(samples)
    return path


def noise(channels: int = 2, seconds: float = 1.0, samplerate: int = 44100, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, int(seconds * samplerate)))).astype(np.float32)


def damaged_htdemucs(seed: int = 1):
    """``tiny_htdemucs(seed)`` with its first weights NaN, as a corrupt download leaves them."""
    model = tiny_htdemucs(seed=seed)
    next(model.parameters()).data.fill_(float("nan"))
    return model


def mix_of(seconds: float, seed: int = 0, samplerate: int = 44100):
    """A stereo noise mix as a torch tensor, the engine's input."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, int(seconds * samplerate), generator=generator)


@pytest.fixture(scope="session")
def full_size_htdemucs():
    """The official htdemucs architecture (random weights), 10 s of music (a song and the
    start of it again: two segments) and ``apply_model``'s stems of it, made once."""
    import json
    from fractions import Fraction

    import torch
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    kwargs = SHARED_MODELS / "htdemucs_kwargs.json"
    if not kwargs.is_file():
        pytest.skip(f"no {kwargs} (the shared folder beside the checkout)")
    spec = json.loads(kwargs.read_text())
    torch.manual_seed(0)
    model = HTDemucs(**spec["kwargs"], segment=Fraction(*spec["segment_fraction"])).eval()
    songs = sorted(EVAL_SONGS.glob("*/mixture.flac"))
    if songs:
        from daw_bridge.audio.io import read_span

        mix = torch.from_numpy(read_span(songs[0], 0.0, 6.8).samples)
        mix = torch.cat([mix, mix[:, : int(3.2 * 44100)]], dim=1)
    else:
        mix = mix_of(10.0)
    reference = apply_model(model, mix[None], shifts=0, split=True, overlap=0.25)[0]
    return model, mix, reference


def killed_splits_staging(folder: Path) -> Path:
    """What a split killed while writing into ``folder`` leaves there: the staging folder
    of a process that is gone, holding half a stem."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    staging = folder / f".daw-bridge-cli-{int(dead.stdout)}.partial"
    staging.mkdir(parents=True)
    (staging / "vocals.wav").write_bytes(b"half a stem")
    return staging


def free_address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def as_owner(socket):
    """A bare ZeroMQ socket that connects as the owner's client (CURVE, the owner's keys)."""
    from daw_bridge import keys

    pair = keys.client_pair()
    socket.curve_publickey = pair.public.encode()
    socket.curve_secretkey = pair.secret.encode()
    socket.curve_serverkey = keys.server_pair().public.encode()
    return socket


def as_server(socket):
    """A bare ZeroMQ socket that listens as this machine's server (CURVE, any client key)."""
    from daw_bridge import keys

    socket.curve_server = True
    socket.curve_secretkey = keys.server_pair().secret.encode()
    return socket


class ServerProcess:
    """A real ``daw-bridge serve`` on a free port, with its own state, cache, preset and
    ensemble folders."""

    def __init__(
        self, model: Path, state: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.address = free_address()
        self.log = state / "server.log"
        state.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "DAW_BRIDGE_STATE_DIR": str(state),
            "DAW_BRIDGE_CACHE_DIR": str(state / "w"),
            "DAW_BRIDGE_PRESET_DIR": str(state / "presets"),
            "DAW_BRIDGE_ENSEMBLE_DIR": str(state / "ensembles"),
            **(env or {}),
        }
        command = [sys.executable, "-m", "daw_bridge", "serve", "--bind", self.address]
        command += ["--model", str(model), "--device", "cpu", *extra]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        from daw_bridge.client.client import Client

        try:
            with Client(self.address, timeout=30) as client:
                client.hello()
        except BaseException:  # a server that never answered must not outlive the test
            self.kill()
            raise

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def keys_in(folder: Path) -> Iterator[None]:
    """Act with the keys in ``folder``: another machine's or another user's config."""
    from daw_bridge import keys

    previous = os.environ[keys.CONFIG_DIR_ENV]
    os.environ[keys.CONFIG_DIR_ENV] = str(folder)
    try:
        yield
    finally:
        os.environ[keys.CONFIG_DIR_ENV] = previous


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the session (subprocesses inherit it), then as before."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Downloads and exported model cores go to a temporary cache, never the user's."""
    with _environment("DAW_BRIDGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache"))):
        yield


@pytest.fixture(scope="session", autouse=True)
def _private_keys(tmp_path_factory: pytest.TempPathFactory):
    """The owner's CURVE keys go to a temporary config folder, shared by every client and
    server the tests start (subprocesses inherit it), never the user's own keys."""
    with _environment("DAW_BRIDGE_CONFIG_DIR", str(tmp_path_factory.mktemp("config"))):
        yield


def save_hub_safetensors(checkpoint: Path, folder: Path) -> Path:
    """Convert a release ``.th`` into ``<signature>.safetensors`` as demucs 4.1's hub files are.

    The format of demucs's hub export (its ``tools/export_hf.py``, not shipped in
    the package): the state's tensors as they are, and ``klass``, ``args`` and
    ``kwargs`` as JSON in the metadata, a Fraction written as
    ``{"_type": "fraction", ...}``. Tests check that demucs's own
    ``demucs.hf.load_safetensors_model`` reads the result.
    """
    import json

    import torch
    from safetensors.torch import save_file

    package = torch.load(checkpoint, map_location="cpu", weights_only=False)

    def encode(value):
        if isinstance(value, Fraction):
            return {
                "_type": "fraction",
                "numerator": value.numerator,
                "denominator": value.denominator,
            }
        return str(value)

    klass = package["klass"]
    metadata = {
        "klass": f"{klass.__module__}.{klass.__qualname__}",
        "args": json.dumps(package["args"], default=encode),
        "kwargs": json.dumps(package["kwargs"], default=encode),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{checkpoint.name.split('-')[0]}.safetensors"
    tensors = {key: value.contiguous() for key, value in package["state"].items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
