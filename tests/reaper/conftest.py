"""One real server (tiny model, 127.0.0.1) for every REAPER test."""

from __future__ import annotations

import pytest

from tests.conftest import ServerProcess


@pytest.fixture(scope="package")
def server(tiny_checkpoint, tmp_path_factory):
    process = ServerProcess(tiny_checkpoint, tmp_path_factory.mktemp("state"))
    yield process
    process.kill()
