"""The server's loop answers at once and is never held up for long (issue 14, point 6).

The loop used to poll its socket every 50 ms, so a cache hit's final event
waited for the next poll; and one 240 MiB message held every other client up
for 11 s. Figures: benchmarks/server_loop.py.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import statistics
import threading
import time

import pytest

from daw_bridge.client.client import Client
from daw_bridge.errors import DawBridgeError
from daw_bridge.protocol import MAX_MESSAGE_BYTES
from tests.conftest import ServerProcess, noise, write_wav


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    process = ServerProcess(tiny_checkpoint, tmp_path_factory.mktemp("loop-state"))
    yield process
    process.kill()


def largest_message_sent(address: str) -> threading.Thread:
    """Start sending a chunk of audio just under the message cap, from another client."""
    data = base64.b64encode(os.urandom((MAX_MESSAGE_BYTES - 4096) * 3 // 4)).decode()

    def send() -> None:
        with Client(address, timeout=60) as client, contextlib.suppress(DawBridgeError):
            client.request({"type": "chunk", "upload": "0" * 16, "offset": 0, "data": data})

    sender = threading.Thread(target=send)
    sender.start()
    return sender


def test_a_cache_hit_is_answered_without_waiting_for_a_poll(server, tmp_path):
    clip = write_wav(tmp_path / "clip.wav", noise(seconds=2.0))
    with Client(server.address, timeout=30) as client:
        assert client.wait(client.submit(clip, tmp_path / "first"))["state"] == "done"
        round_trips = []
        for number in range(15):
            started = time.perf_counter()
            final = client.wait(client.submit(clip, tmp_path / f"hit {number}"))
            round_trips.append(time.perf_counter() - started)
            assert final["result"]["cached"]

    # About 50 ms with the old 50 ms poll floor; about 12 ms now.
    assert statistics.median(round_trips) < 0.035


def test_the_largest_message_holds_other_clients_up_for_under_a_second(server, tmp_path):
    sender = largest_message_sent(server.address)
    slowest = 0.0
    with Client(server.address, timeout=30) as client:
        while sender.is_alive():
            started = time.perf_counter()
            client.hello()
            slowest = max(slowest, time.perf_counter() - started)
    sender.join()

    assert slowest < 1.0


def test_heartbeats_never_pause_for_2_s_while_a_job_runs(server, tmp_path):
    clip = write_wav(tmp_path / "long.wav", noise(seconds=40.0, seed=3))
    events: list[float] = []
    with Client(server.address, timeout=30) as client:
        job = client.submit(clip, tmp_path / "long")
        sender = largest_message_sent(server.address)
        final = client.wait(job, lambda _event: events.append(time.monotonic()))
        sender.join()

    assert final["state"] == "done"
    gaps = [later - earlier for earlier, later in itertools.pairwise(events)]
    assert len(events) > 5 and max(gaps) < 2.0
