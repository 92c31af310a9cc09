"""Two `borderline trainer` processes on the real broker and Redis: one holds the lease and works,
the other waits and says so on its /healthz; stopped with SIGTERM, the first releases the lease
and the second takes it at its next try, not a lease ttl later. (The lease itself, a killed
holder and a lost lease: tests/unit/streams/service/test_trainer_lease.py.)"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from typing import Any

import pytest

from streams.embedded.launcher import WorkerProcess, start_worker

from .conftest import Stack

pytestmark = pytest.mark.integration

TTL_S = 6.0  # long enough that a takeover within it can only be a release


def _health(trainer: WorkerProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{trainer.metrics_port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return dict(json.loads(response.read()))


def _until(trainer: WorkerProcess, words: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = _health(trainer)
        if words in body["note"]:
            return body
        assert time.monotonic() < deadline, f"{trainer.worker_id}: {body}"
        time.sleep(0.2)


def test_a_second_trainer_waits_for_the_lease_and_takes_it_on_a_clean_stop(
    stack: Stack,
) -> None:
    settings = stack.settings(gate={"lease_ttl_s": TTL_S, "interval_s": 1.0})
    first = start_worker(settings, "t1", stack.tmp / "t1.log", role="trainer")
    stack.workers.append(first)
    _until(first, "holding the trainer lease")
    second = start_worker(settings, "t2", stack.tmp / "t2.log", role="trainer")
    stack.workers.append(second)
    # its first note ("waiting for the trainer lease KEY") comes before it has asked who holds it
    waiting = _until(second, "held by")
    assert "waiting for the trainer lease" in waiting["note"]
    assert waiting["live"] and waiting["ready"]
    assert "held by" in second.log.read_text()  # and says so on its output

    assert first.stop(signal.SIGTERM, timeout_s=30) == 0
    stopped = time.monotonic()
    _until(second, "holding the trainer lease")
    assert time.monotonic() - stopped < TTL_S / 2, "taken only once the lease lapsed"
