"""Shared test material: tiny real Demucs checkpoints and paths to shared data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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


def save_checkpoint(model, folder: Path, signature: str, half: bool = False) -> Path:
    """Save ``model`` as demucs does: ``<signature>-<sha256[:8]>.th``.

    This is what ``demucs.states.serialize_model`` builds, minus its
    omegaconf-only ``training_args``.
    """
    from demucs.states import get_state, save_with_checksum

    args, kwargs = model._init_args_kwargs
    package = {
        "klass": type(model),
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=half),
        "training_args": {},
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_with_checksum(package, folder / f"{signature}.th")
    return next(folder.glob(f"{signature}-*.th"))


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


def mix_of(seconds: float, seed: int = 0, samplerate: int = 44100):
    """A stereo noise mix as a torch tensor, the engine's input."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, int(seconds * samplerate), generator=generator)


def free_address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class ServerProcess:
    """A real ``daw-bridge serve`` on a free port, with its own state, cache and preset folders."""

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
            **(env or {}),
        }
        command = [sys.executable, "-m", "daw_bridge", "serve", "--bind", self.address]
        command += ["--model", str(model), "--device", "cpu", *extra]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        from daw_bridge.client.client import Client

        with Client(self.address, timeout=30) as client:
            client.hello()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Downloads and exported model cores go to a temporary cache, never the user's."""
    previous = os.environ.get("DAW_BRIDGE_CACHE_DIR")
    os.environ["DAW_BRIDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("DAW_BRIDGE_CACHE_DIR", None)
    else:
        os.environ["DAW_BRIDGE_CACHE_DIR"] = previous
