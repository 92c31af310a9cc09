"""The health decision (`streams.service.health`: stuck or not, ready or not) and its endpoint on
the metrics port (`streams.service.metrics.Health`), served by a real HTTP server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from streams.service.health import Progress, liveness, readiness, report
from streams.service.metrics import Health, Metrics

WINDOW = 300.0


def test_an_idle_process_with_no_lag_is_alive_however_long_it_waits() -> None:
    p = Progress(started_at=0.0)
    assert liveness(p, now=1e6, stuck_after_s=WINDOW).ok
    p.observe_lag(0, now=10.0)
    assert liveness(p, now=1e6, stuck_after_s=WINDOW).ok


def test_lag_without_progress_past_the_window_is_stuck() -> None:
    p = Progress(started_at=0.0)
    p.handled(now=100.0)
    p.observe_lag(7, now=150.0)  # work appeared at 150
    assert liveness(p, now=150.0 + WINDOW, stuck_after_s=WINDOW).ok  # the edge is not past it
    verdict = liveness(p, now=151.0 + WINDOW, stuck_after_s=WINDOW)
    assert not verdict.ok
    assert verdict.reason == "stuck: lag 7, no progress for 301 s (window 300 s)"


def test_work_that_appears_after_a_long_idle_spell_is_not_stuck_at_once() -> None:
    p = Progress(started_at=0.0)
    p.handled(now=10.0)
    p.observe_lag(0, now=20.0)
    p.observe_lag(3, now=5000.0)  # an hour and more idle, then work
    assert liveness(p, now=5001.0, stuck_after_s=WINDOW).ok
    p.observe_lag(5, now=5100.0)  # still behind: the window keeps running from 5000
    assert not liveness(p, now=5000.0 + WINDOW + 1, stuck_after_s=WINDOW).ok


@pytest.mark.parametrize("mark", ["handled", "committed"])
def test_a_batch_or_a_commit_is_progress(mark: str) -> None:
    p = Progress(started_at=0.0)
    p.observe_lag(4, now=0.0)
    assert not liveness(p, now=WINDOW + 1, stuck_after_s=WINDOW).ok
    getattr(p, mark)(now=WINDOW + 1)
    assert liveness(p, now=2 * WINDOW, stuck_after_s=WINDOW).ok
    assert not liveness(p, now=2 * WINDOW + 2, stuck_after_s=WINDOW).ok


def test_a_step_under_way_too_long_is_stuck_and_a_finished_one_is_progress() -> None:
    p = Progress(started_at=0.0, needs_partitions=False)
    p.begin(now=10.0)
    assert liveness(p, now=10.0 + WINDOW, stuck_after_s=WINDOW).ok
    verdict = liveness(p, now=11.0 + WINDOW, stuck_after_s=WINDOW)
    assert verdict == verdict.__class__(False, "stuck: one step under way for 301 s (window 300 s)")
    p.end(now=400.0)
    assert p.busy_since is None and p.last_batch_at == 400.0
    assert liveness(p, now=1e6, stuck_after_s=WINDOW).ok  # idle between steps is fine


def test_ready_once_loaded_and_assigned() -> None:
    p = Progress(started_at=0.0)
    assert readiness(p).reason == "not ready: still loading"
    p.loaded = True
    assert readiness(p).reason == "not ready: no partitions assigned"
    p.assigned = True
    assert readiness(p).ok
    trainer = Progress(started_at=0.0, needs_partitions=False, loaded=True)
    assert readiness(trainer).ok


def test_report_says_what_the_verdicts_rest_on() -> None:
    p = Progress(started_at=0.0, loaded=True, assigned=True, note="lease held")
    p.handled(now=90.0)
    p.committed(now=95.0)
    p.observe_lag(2, now=96.0)
    body = report(p, now=100.0, stuck_after_s=WINDOW)
    assert body == {
        "live": True,
        "ready": True,
        "reason": "ready",
        "lag": 2,
        "last_batch_s_ago": 10.0,
        "last_commit_s_ago": 5.0,
        "busy_s": None,
        "stuck_after_s": WINDOW,
        "uptime_s": 100.0,
        "note": "lease held",
    }
    stuck = report(p, now=1000.0, stuck_after_s=WINDOW)
    assert stuck["live"] is False and stuck["reason"].startswith("stuck: lag 2")


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_metrics_port_answers_healthz_and_readyz_from_the_progress() -> None:
    now = [0.0]
    progress = Progress(started_at=0.0)
    metrics = Metrics()
    port = metrics.serve(0, "127.0.0.1", Health(progress, WINDOW, clock=lambda: now[0]))
    base = f"http://127.0.0.1:{port}"

    assert _get(f"{base}/healthz")[0] == 200
    status, body = _get(f"{base}/readyz")
    assert (status, body["reason"]) == (503, "not ready: still loading")
    progress.loaded = progress.assigned = True
    assert _get(f"{base}/readyz")[0] == 200

    progress.observe_lag(12, now=0.0)
    now[0] = WINDOW + 5
    status, body = _get(f"{base}/healthz")
    assert status == 503 and body["live"] is False and body["lag"] == 12
    assert _get(f"{base}/readyz")[0] == 200  # stuck is for liveness: a restart, not a reroute

    metrics.items.labels(action="allow").inc()
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        assert 'borderline_items_total{action="allow"} 1.0' in response.read().decode()


def test_lag_of_an_unreachable_broker_is_said_once_below_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The watchdog reports a broker that cannot be reached; the lag reader says it once, at
    INFO, however many polls fail (an outage test counts the warnings of a dying worker)."""
    import asyncio
    import logging
    import socket

    from streams.service.progress import GroupLag

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lag = GroupLag(
        f"127.0.0.1:{port}",
        "g",
        ["t"],
        metrics=Metrics(),
        progress=Progress(started_at=0.0),
        timeout_s=1.0,
    )

    async def polls() -> None:
        for _ in range(3):
            await lag.poll()

    with caplog.at_level(logging.INFO, logger="streams.service.progress"):
        asyncio.run(polls())
    said = [r for r in caplog.records if r.name == "streams.service.progress"]
    assert [r.levelno for r in said] == [logging.INFO], [r.getMessage() for r in said]
    assert "consumer lag of group g not read" in said[0].getMessage()
