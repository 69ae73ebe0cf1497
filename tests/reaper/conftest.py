"""One real server (tiny model, 127.0.0.1) for every REAPER test, a fake REAPER with
daw-bridge installed, and its settings."""

from __future__ import annotations

import pytest

from daw_bridge.reaper.install import install
from tests.conftest import ServerProcess
from tests.reaper.fake_reaper import FakeReaper


@pytest.fixture(scope="package")
def server(tiny_checkpoint, tmp_path_factory):
    process = ServerProcess(tiny_checkpoint, tmp_path_factory.mktemp("state"))
    yield process
    process.kill()


@pytest.fixture
def reaper(tmp_path):
    with FakeReaper(tmp_path / "REAPER") as fake:
        install(fake.resource_path)
        yield fake


def configure(reaper: FakeReaper, address: str, **settings: str) -> None:
    """daw-bridge's Settings in REAPER's extended state: the server address, no autostart."""
    for key, value in {"address": address, "autostart": "0", **settings}.items():
        reaper.ext_state[("daw-bridge", key)] = value
