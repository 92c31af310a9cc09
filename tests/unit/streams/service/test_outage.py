"""Unit tests for how an outage is told (streams.service.outage), on a fake clock: the first
failure of an outage is one line, then one summary per interval with the count, then one line
when it ends, however many calls failed; `ThrottledLogs` does the same for a library's repeated
log lines and leaves everything else alone; the throttle itself is a pure step. Plus the
watchdog (streams.service.watchdog): it probes every target and, through the retry policy,
raises once one outlasted the budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import pytest

from streams.service.outage import InfrastructureError, Outages, Throttle, ThrottledLogs
from streams.service.retry import Retrying, RetryPolicy
from streams.service.watchdog import Watchdog
from tests.unit.streams.service.test_retry import FakeTime

LOGGER = "test.outage"


def _record(
    msg: str, *args: object, level: int = logging.ERROR, name: str = "aiokafka"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


# --- the pure throttle ----------------------------------------------------------------------------


def test_throttle_holds_back_events_inside_the_interval_and_counts_them() -> None:
    t = Throttle(every_s=10.0, shown_at=0.0)
    shown = []
    for now in [1.0, 2.0, 9.99, 10.0, 10.5, 25.0]:
        t, held = t.event(now)
        shown.append(held)
    assert shown == [None, None, None, 3, None, 1]
    assert t == Throttle(every_s=10.0, shown_at=25.0, held=0)


# --- one outage, a few lines ----------------------------------------------------------------------


def test_an_outage_is_one_line_then_a_summary_per_interval_then_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    outages = Outages(clock=time.clock, log_every_s=10.0, logger=logging.getLogger(LOGGER))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        while time.now < 31.0:  # 40 failed calls a second for 6 s, then 5 a second
            outages.failed("redis", ConnectionError("refused"))
            time.now += 0.025 if time.now < 6.0 else 0.2
        assert outages.down_for("redis") == pytest.approx(time.now)
        outages.succeeded("redis")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5, lines
    assert lines[0].startswith("redis unreachable (ConnectionError: refused)")
    assert all("still unreachable" in line for line in lines[1:4])
    assert "failed calls" in lines[1]
    assert lines[4].startswith("redis reachable again after")
    assert outages.down_for("redis") is None


def test_each_target_has_its_own_outage(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    outages = Outages(clock=time.clock, names={"kafka": "the broker at b:9092"})
    with caplog.at_level(logging.WARNING):
        outages.failed("kafka", OSError("refused"))
        outages.failed("redis", OSError("refused"))
        outages.failed("kafka", OSError("refused"))
    starts = [r.getMessage().split(" unreachable")[0] for r in caplog.records]
    assert starts == ["the broker at b:9092", "redis"]


def test_the_error_names_the_target_and_how_long_it_was_unreachable() -> None:
    time = FakeTime(now=100.0)
    outages = Outages(clock=time.clock, names={"redis": "Redis at r:6379"})
    outages.failed("redis", ConnectionError("Error 111\nconnecting"), since=95.0)
    time.now = 160.5
    error = outages.error("redis", budget_s=60)
    assert isinstance(error, InfrastructureError)
    assert str(error) == (
        "Redis at r:6379 unreachable for 65.5 s (outage budget 60 s; 1 failed calls, "
        "last error ConnectionError: Error 111 connecting)"
    )


# --- a library's repeated lines -------------------------------------------------------------------


def test_throttled_logs_let_the_first_through_then_one_per_interval_saying_how_many() -> None:
    time = FakeTime()
    throttled = ThrottledLogs(every_s=10.0, clock=time.clock)
    passed = []
    for _ in range(400):  # aiokafka's 40 lines a second for 10 s
        record = _record("Unable connect to node with id %s: %s", 111, "refused")
        if throttled.filter(record):
            passed.append(record.getMessage())
        time.now += 0.025
    assert len(passed) == 1
    time.now = 10.0
    record = _record("Unable connect to node with id %s: %s", 111, "refused")
    assert throttled.filter(record)
    assert record.getMessage() == (
        "Unable connect to node with id 111: refused [399 more like this in the last 10 s]"
    )
    time.now = 20.5
    assert throttled.filter(_record("%s%% of the calls failed", 100))
    assert not throttled.filter(_record("%s%% of the calls failed", 100))
    time.now = 31.0
    record = _record("%s%% of the calls failed", 100)
    assert throttled.filter(record)  # the note keeps a %-template formattable
    assert record.getMessage() == "100% of the calls failed [1 more like this in the last 10 s]"


def test_throttled_logs_keep_other_messages_and_lower_levels() -> None:
    time = FakeTime()
    throttled = ThrottledLogs(every_s=10.0, clock=time.clock)
    assert throttled.filter(_record("Unable to update metadata from %s", [111]))
    assert throttled.filter(_record("Unable connect to node %s", 1))  # another template
    assert throttled.filter(_record("Unable connect to node %s", 1, name="other"))
    # the same template saying something else: two adapters refused are two lines
    assert throttled.filter(_record("adapter %s refused: %s", "a1", "sha256 mismatch"))
    assert throttled.filter(_record("adapter %s refused: %s", "a2", "for m-another-base"))
    for _ in range(5):
        assert throttled.filter(_record("Joined group %s", "g", level=logging.INFO))
    assert not throttled.filter(_record("Unable to update metadata from %s", [111]))


def test_throttled_logs_install_once_per_handler_and_uninstall() -> None:
    logger = logging.getLogger("test.outage.install")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        added = ThrottledLogs.install(10.0, logger)
        assert ThrottledLogs.install(10.0, logger) == []  # already there
        assert len(added) == 1 and isinstance(handler.filters[0], ThrottledLogs)
        ThrottledLogs.uninstall(added)
        assert handler.filters == []
    finally:
        logger.removeHandler(handler)


# --- the watchdog ---------------------------------------------------------------------------------


def test_the_watchdog_raises_once_a_target_outlasted_the_budget() -> None:
    time = FakeTime()
    retry = Retrying(
        RetryPolicy(budget_s=5.0, base_s=0.2, max_s=1.0),
        outages=Outages(clock=time.clock),
        rng=random.Random(0),
        sleep=time.sleep,
    )
    probes = []

    async def redis() -> None:
        probes.append(time.now)
        if time.now >= 3.0:
            raise ConnectionError("refused")

    watchdog = Watchdog({"redis": redis}, retry, interval_s=1.0, sleep=time.sleep)
    with pytest.raises(InfrastructureError, match="redis unreachable for 5"):
        asyncio.run(watchdog.run())
    assert probes[:4] == [0.0, 1.0, 2.0, 3.0]  # every interval while it answers
    assert time.now == pytest.approx(8.0)  # failing from t=3 on, for the 5 s budget


def test_the_watchdog_probes_every_target_concurrently() -> None:
    probed = {"kafka": 0, "redis": 0}
    stalled = asyncio.Event()

    async def kafka() -> None:
        probed["kafka"] += 1

    async def redis() -> None:
        probed["redis"] += 1
        await stalled.wait()  # a stalled Redis does not hold up the broker's probe

    async def main() -> None:
        retry = Retrying(RetryPolicy(budget_s=60.0))
        task = asyncio.create_task(
            Watchdog({"kafka": kafka, "redis": redis}, retry, interval_s=0.001).run()
        )
        while probed["kafka"] < 5:
            await asyncio.sleep(0.001)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert probed["kafka"] >= 5 and probed["redis"] == 1
