"""The test harness itself: waiting for a condition returns as soon as it holds and fails naming
what was awaited and the last value; unit tests run under the short timeout; the Redis runner
hands its body a working client and returns the body's result."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.unit.conftest import UNIT_TIMEOUT_S
from tests.waiting import Progress, WaitTimeout, wait_until, wait_until_async


def test_wait_until_returns_the_first_truthy_value_as_soon_as_it_comes() -> None:
    values = iter([0, None, [], 7, 8])
    started = time.monotonic()
    assert wait_until(lambda: next(values), timeout_s=5, interval_s=0.01) == 7
    assert time.monotonic() - started < 1


def test_wait_until_fails_at_the_deadline_naming_what_and_the_last_value() -> None:
    seen = iter(range(1_000_000))
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: [next(seen)] * 0, timeout_s=0.2, interval_s=0.05, what="the queue")
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0
    message = str(caught.value)
    assert "waiting for the queue" in message and message.endswith(": []")
    assert "after 0.2s" in message
    assert isinstance(caught.value, AssertionError)  # pytest reports it as a failure


def test_wait_until_polls_once_more_at_the_deadline() -> None:
    calls: list[float] = []

    def late() -> bool:
        calls.append(time.monotonic())
        return len(calls) >= 3

    # interval longer than the timeout: a first poll, then one at the deadline, then give up
    with pytest.raises(WaitTimeout, match=r"\(2 polls\)"):
        wait_until(late, timeout_s=0.1, interval_s=10)


def test_wait_until_async_awaits_the_predicate_on_the_loop() -> None:
    async def scenario() -> tuple[str, str]:
        flag: dict[str, str] = {}

        async def later() -> None:
            await asyncio.sleep(0.05)
            flag["state"] = "done"

        async def state() -> str:
            return flag.get("state", "")

        task = asyncio.create_task(later())
        got = await wait_until_async(state, timeout_s=5, interval_s=0.01, what="the task")
        await task
        with pytest.raises(WaitTimeout, match="waiting for nothing: ''"):
            await wait_until_async(
                lambda: asyncio.sleep(0, result=""), timeout_s=0.05, what="nothing"
            )
        return got, flag["state"]

    assert asyncio.run(scenario()) == ("done", "done")


def test_unit_tests_run_under_the_short_timeout(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None and marker.args == (UNIT_TIMEOUT_S,)
    assert UNIT_TIMEOUT_S <= 60


@pytest.mark.timeout(5)
def test_a_unit_test_own_timeout_wins(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None and marker.args == (5,)


def test_the_redis_runner_gives_a_working_client_and_returns_the_result(
    run_redis: Any, prefix: str
) -> None:
    async def body(redis: Redis) -> Any:
        await redis.set(f"{prefix}:k", b"v")
        return await redis.get(f"{prefix}:k")

    assert run_redis(body) == b"v"


def test_a_progress_answer_shows_how_far_things_got_when_a_wait_times_out() -> None:
    with pytest.raises(WaitTimeout, match=r"waiting for the labels: labels=3, excluded=\[\]$"):
        wait_until(lambda: Progress(False, {"labels": 3, "excluded": []}), 0.05, 0.01, "the labels")
    assert wait_until(lambda: Progress(True, {"labels": 100}), 1).facts == {"labels": 100}
