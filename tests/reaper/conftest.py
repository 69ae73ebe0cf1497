"""One real server (tiny model, 127.0.0.1) for every REAPER test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def server(tiny_checkpoint, tmp_path_factory):
    from tests.server.test_server import ServerProcess

    process = ServerProcess(tiny_checkpoint, tmp_path_factory.mktemp("state"))
    yield process
    process.kill()
