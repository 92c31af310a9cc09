"""Unit tests for the one retry policy (streams.service.retry) on a fake clock and a fake sleep:
the full-jitter backoff stays inside its bounds and is reproducible from a seed; a call is
retried until the target has been unreachable for the outage budget, then fails with one
`InfrastructureError` line that names the target and how long; an error about the data is not
retried; a stalled try is cut at the attempt timeout; concurrent calls share one outage; and the
old attempt count still caps a call. The docstring examples of the modules run here too."""

from __future__ import annotations

import asyncio
import doctest
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType

import pytest

from streams.service import outage, retry, watchdog
from streams.service.metrics import Metrics
from streams.service.outage import InfrastructureError, Outages
from streams.service.retry import Retrying, RetryPolicy, any_error, is_infrastructure
from streams.wire.settings import ResilienceSettings


@dataclass
class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other tasks run, as a real sleep does


def _retrying(
    time: FakeTime, policy: RetryPolicy | None = None, seed: int = 0, **outages: object
) -> Retrying:
    return Retrying(
        policy or RetryPolicy(budget_s=60.0, base_s=0.2, max_s=5.0),
        outages=Outages(clock=time.clock, **outages),  # type: ignore[arg-type]
        metrics=Metrics(),
        rng=random.Random(seed),
        sleep=time.sleep,
    )


def _failing(
    time: FakeTime, failures: int | None, error: Exception, cost_s: float = 0.0
) -> Callable[[], Awaitable[str]]:
    """An operation that fails ``failures`` times (None: always), each try taking ``cost_s``."""
    calls = [0]

    async def operation() -> str:
        calls[0] += 1
        time.now += cost_s
        if failures is None or calls[0] <= failures:
            raise error
        return "ok"

    return operation


def _retries(r: Retrying, target: str) -> float:
    assert r.metrics is not None
    value = r.metrics.registry.get_sample_value(
        "borderline_infrastructure_retries_total", {"target": target}
    )
    return 0.0 if value is None else value


@pytest.mark.parametrize("module", [retry, outage, watchdog], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


# --- the policy -----------------------------------------------------------------------------------


def test_full_jitter_stays_between_zero_and_the_doubling_ceiling() -> None:
    policy = RetryPolicy(base_s=0.2, max_s=5.0)
    rng = random.Random(7)
    for failures in range(1, 40):
        ceiling = min(5.0, 0.2 * 2 ** (failures - 1))
        delays = [policy.delay(failures, rng.random()) for _ in range(200)]
        assert all(0.0 <= d < ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # the whole range is used: full jitter
    assert policy.delay(1, 0.999) < 0.2
    assert policy.delay(10_000, 0.999) < 5.0  # no overflow far into an outage


def test_gives_up_on_the_budget_or_the_attempt_cap_whichever_first() -> None:
    assert not RetryPolicy(budget_s=60).gives_up(down_s=59.99, failures=10_000)
    assert RetryPolicy(budget_s=60).gives_up(down_s=60.0, failures=1)
    assert RetryPolicy(budget_s=60, attempts=3).gives_up(down_s=1.0, failures=3)
    assert not RetryPolicy(budget_s=60, attempts=3).gives_up(down_s=1.0, failures=2)


def test_policy_from_the_settings() -> None:
    settings = ResilienceSettings(outage_budget_s=90, backoff_base_s=0.5, backoff_max_s=8)
    timed = RetryPolicy.from_settings(settings)
    assert (timed.budget_s, timed.base_s, timed.max_s) == (90, 0.5, 8)
    assert timed.attempt_timeout_s == settings.call_timeout_s
    assert RetryPolicy.from_settings(settings, timed=False).attempt_timeout_s is None
    assert timed.attempts is None  # a time budget, not a count


def test_what_counts_as_the_broker_or_redis_failing() -> None:
    from aiokafka.errors import KafkaConnectionError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    assert is_infrastructure(RedisConnectionError("down"))
    assert is_infrastructure(ResponseError("READONLY"))  # a failover: still Redis
    assert is_infrastructure(KafkaConnectionError())
    assert is_infrastructure(TimeoutError())
    assert not is_infrastructure(KeyError("item"))
    assert not is_infrastructure(InfrastructureError("budget spent"))
    assert any_error(KeyError("item")) and not any_error(InfrastructureError("spent"))


# --- running calls --------------------------------------------------------------------------------


def test_a_call_that_recovers_returns_its_result_after_seeded_jittered_waits() -> None:
    time = FakeTime()
    r = _retrying(time, seed=3)
    result = asyncio.run(r("redis", _failing(time, 4, ConnectionError("refused"))))
    assert result == "ok"
    policy, rng = r.policy, random.Random(3)
    assert time.sleeps == [policy.delay(n, rng.random()) for n in range(1, 5)]
    assert _retries(r, "redis") == 4
    again = FakeTime()
    asyncio.run(_retrying(again, seed=3)("redis", _failing(again, 4, ConnectionError())))
    assert again.sleeps == time.sleeps  # the same seed, the same waits


def test_a_call_gives_up_after_the_outage_budget_with_one_line_naming_target_and_time() -> None:
    time = FakeTime()
    r = _retrying(time, names={"redis": "Redis at r:6379"})
    with pytest.raises(InfrastructureError) as caught:
        asyncio.run(r("redis", _failing(time, None, ConnectionError("refused"), cost_s=0.01)))
    assert 60.0 <= time.now < 60.0 + 5.0 + 0.1  # the budget, not a count of attempts
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("Redis at r:6379 unreachable for 6")
    assert "outage budget 60 s" in message and "ConnectionError: refused" in message
    assert isinstance(caught.value.__cause__, ConnectionError)


def test_the_last_wait_ends_at_the_budget_so_the_last_try_is_on_time() -> None:
    time = FakeTime()
    r = _retrying(time, RetryPolicy(budget_s=10.0, base_s=4.0, max_s=4.0), seed=1)
    with pytest.raises(InfrastructureError):
        asyncio.run(r("kafka", _failing(time, None, ConnectionError())))
    assert time.now == pytest.approx(10.0)


def test_an_error_about_the_data_is_raised_at_once() -> None:
    time = FakeTime()
    r = _retrying(time)
    with pytest.raises(ValueError, match="bad"):
        asyncio.run(r("redis", _failing(time, None, ValueError("bad"))))
    assert time.sleeps == []


def test_any_error_is_retried_when_asked_for_a_periodic_body() -> None:
    time = FakeTime()
    r = _retrying(time)
    result = asyncio.run(r("redis", _failing(time, 2, ValueError("bug")), retry_on=any_error))
    assert result == "ok" and len(time.sleeps) == 2


def test_the_attempt_cap_still_bounds_a_call() -> None:
    time = FakeTime()
    r = _retrying(time, RetryPolicy(attempts=3, base_s=0.001))
    with pytest.raises(InfrastructureError, match="kafka"):
        asyncio.run(r("kafka", _failing(time, None, ConnectionError())))
    assert len(time.sleeps) == 2
    assert _retries(r, "kafka") == 2  # retries, not failures


def test_a_stalled_try_is_cut_at_the_attempt_timeout_and_retried() -> None:
    calls = []

    async def stalled_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(60)  # a server that accepts and never answers
        return "ok"

    r = Retrying(RetryPolicy(attempt_timeout_s=0.05, base_s=0.001), rng=random.Random(0))
    assert asyncio.run(r("redis", stalled_once)) == "ok"
    assert len(calls) == 2


def test_a_stalled_try_never_outlasts_the_budget() -> None:
    async def stalled() -> str:
        await asyncio.sleep(60)  # a broker that is gone and a client that waits for it
        return "never"

    r = Retrying(RetryPolicy(budget_s=0.3, attempt_timeout_s=10.0), rng=random.Random(0))

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(InfrastructureError, match=r"outage budget 0\.3 s"):
            await r("kafka", stalled)
        return loop.time() - started

    assert asyncio.run(main()) < 2.0  # not the 10 s of one try


def test_a_try_that_hung_counts_from_when_it_began() -> None:
    time = FakeTime()
    r = _retrying(time, RetryPolicy(budget_s=10.0))
    with pytest.raises(InfrastructureError):
        asyncio.run(r("redis", _failing(time, None, TimeoutError(), cost_s=6.0)))
    assert len(time.sleeps) == 1  # a 6 s try, a wait, another 6 s try: over 10 s, gave up
    assert time.now < 14.0


def test_concurrent_calls_share_one_outage_and_one_budget() -> None:
    time = FakeTime()
    r = _retrying(time, RetryPolicy(budget_s=60.0))
    outages = r.outages
    outages.failed("redis", ConnectionError("refused"))  # another call failed at t=0
    time.now = 50.0  # and nothing reached Redis since

    with pytest.raises(InfrastructureError, match="unreachable for 6"):
        asyncio.run(r("redis", _failing(time, None, ConnectionError())))
    assert time.now < 61.0  # the call that began at 50 s did not get a budget of its own


def test_a_success_ends_the_outage_so_the_next_one_has_a_full_budget() -> None:
    time = FakeTime()
    r = _retrying(time, RetryPolicy(budget_s=60.0))
    asyncio.run(r("redis", _failing(time, 3, ConnectionError())))
    assert r.outages.down_for("redis") is None
    time.now += 55.0
    assert asyncio.run(r("redis", _failing(time, 3, ConnectionError()))) == "ok"


def test_a_loop_at_its_own_pace_reports_failures_and_gets_the_error_when_spent() -> None:
    time = FakeTime()
    r = _retrying(time, RetryPolicy(budget_s=10.0))
    r.failed("redis", ConnectionError())
    time.now = 9.0
    r.failed("redis", ConnectionError())
    assert _retries(r, "redis") == 2
    time.now = 10.0
    with pytest.raises(InfrastructureError, match=r"redis unreachable for 10\.0 s"):
        r.failed("redis", ConnectionError())
    r.succeeded("redis")
    assert r.outages.down_for("redis") is None
