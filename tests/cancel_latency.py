"""How long a cancel takes to stop a running job, measured with a real thread and clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from daw_bridge.errors import CancelledError


def cancel_latencies(
    run: Callable[[Callable[[], bool]], object], delays: Sequence[float]
) -> list[float]:
    """Seconds from a cancel request to ``run(should_cancel)`` raising :class:`CancelledError`.

    ``run`` starts on a worker thread once per delay; the cancel comes ``delays[i]``
    seconds later. A run that ends without being cancelled fails the measurement.
    """
    latencies = []
    for delay in delays:
        cancel = threading.Event()
        stopped: list[float] = []

        def work(cancel: threading.Event = cancel, stopped: list[float] = stopped) -> None:
            try:
                run(cancel.is_set)
            except CancelledError:
                stopped.append(time.perf_counter())

        worker = threading.Thread(target=work, name="cancel-latency")
        worker.start()
        time.sleep(delay)
        asked = time.perf_counter()
        cancel.set()
        worker.join(30)
        assert stopped, f"the run was not cancelled (it ended before {delay} s, or hung)"
        latencies.append(stopped[0] - asked)
    return latencies
