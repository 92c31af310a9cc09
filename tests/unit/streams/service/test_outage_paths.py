"""Unit tests for how each process rides out an outage, over small fakes of our interfaces and a
fake clock: the collector stores every label through a Redis stall; a periodic task's errors are
retried and end the process only once the outage budget is spent, a background task's error ends
it (one line), a cancellation does not; the control plane keeps its
poll pace through an outage and raises after the budget; the trainer's Redis ports retry every
call but a rollback (applied twice it would step back twice)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.labels.store import ReviewedItem
from streams.service.app import add_guarded_task, add_periodic
from streams.service.collect import Collector
from streams.service.control import ControlPlane
from streams.service.metrics import Metrics
from streams.service.outage import InfrastructureError, Outages
from streams.service.retry import Retrying, RetryPolicy
from streams.service.trainer_ports import _retried
from tests.unit.streams.service.test_collect import TOPICS, AdmitAll, FakeRoutings, FakeSink, _label
from tests.unit.streams.service.test_control import (
    FakeModel,
    FakePolicies,
    FakeRedis,
    FakeRegistry,
    FakeServing,
)
from tests.unit.streams.service.test_retry import FakeTime


def _retry(time: FakeTime, budget_s: float = 60.0) -> Retrying:
    return Retrying(
        RetryPolicy(budget_s=budget_s, base_s=0.2, max_s=5.0),
        outages=Outages(clock=time.clock),
        metrics=Metrics(),
        rng=random.Random(0),
        sleep=time.sleep,
    )


# --- the collector --------------------------------------------------------------------------------


@dataclass
class StallingLabelStore:
    """A label store on a Redis that times out until ``until`` on the fake clock."""

    time: FakeTime
    until: float
    votes_by_item: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    excluded_set: set[str] = field(default_factory=set)

    def _up(self) -> None:
        if self.time.now < self.until:
            self.time.now += 1.0  # each try waits a while before it times out
            raise TimeoutError("Timeout reading from 127.0.0.1:6379")

    async def registered(self) -> set[str]:
        self._up()
        return {"ann", "bob"}

    async def excluded(self) -> set[str]:
        self._up()
        return set(self.excluded_set)

    async def add_label(
        self, policy: str, item_id: str, reviewer: str, label: str, labeled_at: float
    ) -> str:
        self._up()
        votes = self.votes_by_item.setdefault((policy, item_id), {})
        if reviewer in votes:
            return "duplicate"
        votes[reviewer] = label
        return "stored"

    async def votes(self, policy: str, item_id: str) -> dict[str, str]:
        self._up()
        return dict(self.votes_by_item.get((policy, item_id), {}))

    async def reviewed_items(self, item_ids: Sequence[str]) -> dict[str, ReviewedItem]:
        self._up()
        return {i: ReviewedItem(i, "text", None, 0.9, "uncertain", 0.0) for i in item_ids}

    async def votes_every_policy(self) -> dict[str, dict[str, str]]:
        self._up()
        return {f"{p}/{i}": dict(votes) for (p, i), votes in self.votes_by_item.items()}

    async def cleared(self) -> set[str]:
        self._up()
        return set()

    async def set_excluded(self, excluded: set[str]) -> None:
        self._up()
        self.excluded_set = set(excluded)


def test_the_collector_stores_every_label_through_a_30_second_redis_stall() -> None:
    time = FakeTime()
    store = StallingLabelStore(time, until=30.0)
    collector = Collector(
        store=store,  # type: ignore[arg-type]
        admission=AdmitAll(),
        routings=FakeRoutings(),
        sink=FakeSink(),
        metrics=Metrics(),
        topics=TOPICS,
        worker="collector-1",
        recompute_every=2,  # the recompute inside a batch rides it out too
        retry=_retry(time),
    )
    labels = [_label(f"item-{i}", r, "violating", "v1") for i in range(3) for r in ("ann", "bob")]
    result = asyncio.run(collector.handle(labels))
    assert len(result.stored) == 6
    assert {k[1]: sorted(v) for k, v in store.votes_by_item.items()} == {
        f"item-{i}": ["ann", "bob"] for i in range(3)
    }
    assert time.now >= 30.0


def test_the_collector_gives_up_after_the_budget_without_storing_half_a_batch() -> None:
    time = FakeTime()
    store = StallingLabelStore(time, until=1e9)
    collector = Collector(
        store=store,  # type: ignore[arg-type]
        admission=AdmitAll(),
        routings=FakeRoutings(),
        sink=FakeSink(),
        metrics=Metrics(),
        topics=TOPICS,
        worker="collector-1",
        retry=_retry(time, budget_s=60.0),
    )
    with pytest.raises(InfrastructureError, match="redis unreachable for 6"):
        asyncio.run(collector.handle([_label("item-1", "ann", "benign", "v1")]))
    assert store.votes_by_item == {}


# --- periodic tasks (the collector's agreement timer) ---------------------------------------------


@dataclass
class FakeApp:
    """The part of a faust app `add_periodic` and `add_guarded_task` use."""

    timers: dict[str, tuple[float, Callable[[], Awaitable[None]]]] = field(default_factory=dict)
    tasks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def timer(self, interval: float, name: str) -> Callable[[Any], Any]:
        def register(fun: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
            self.timers[name] = (interval, fun)
            return fun

        return register

    def task(self, fun: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        self.tasks.append(fun)
        return fun


def _periodic(
    time: FakeTime, body: Callable[[], Awaitable[None]], budget_s: float = 60.0
) -> tuple[Callable[[], Awaitable[None]], list[BaseException]]:
    app, fatal = FakeApp(), []
    add_periodic(
        app,  # type: ignore[arg-type]
        body,
        interval_s=10.0,
        name="recompute_agreement",
        retry=_retry(time, budget_s),
        target="redis",
        on_fatal=fatal.append,
    )
    interval, tick = app.timers["recompute_agreement"]
    assert interval == 10.0
    return tick, fatal


def test_a_timer_that_fails_through_a_stall_is_retried_and_never_fatal() -> None:
    time = FakeTime()
    done: list[float] = []

    async def recompute() -> None:
        if time.now < 30.0:
            time.now += 5.0  # Redis stopped: the call times out after its socket timeout
            raise TimeoutError("Timeout reading from socket")
        done.append(time.now)

    tick, fatal = _periodic(time, recompute)
    asyncio.run(tick())
    assert fatal == []
    assert len(done) == 1


def test_a_bug_in_a_timer_is_retried_too_and_ends_the_process_only_after_the_budget() -> None:
    time = FakeTime()

    async def broken() -> None:
        raise KeyError("a bug")

    tick, fatal = _periodic(time, broken, budget_s=20.0)
    asyncio.run(tick())
    assert len(fatal) == 1 and isinstance(fatal[0], InfrastructureError)
    assert time.now == pytest.approx(20.0)


def test_a_guarded_task_that_raises_ends_the_process_and_one_that_is_cancelled_does_not() -> None:
    app, fatal = FakeApp(), []

    async def spent() -> None:
        raise InfrastructureError("Redis at r:6379 unreachable for 60.1 s")

    async def stopped() -> None:
        raise asyncio.CancelledError

    add_guarded_task(app, spent, on_fatal=fatal.append)  # type: ignore[arg-type]
    add_guarded_task(app, stopped, on_fatal=fatal.append)  # type: ignore[arg-type]
    assert [t.__name__ for t in app.tasks] == ["spent", "stopped"]
    asyncio.run(app.tasks[0]())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(app.tasks[1]())
    assert [str(e) for e in fatal] == ["Redis at r:6379 unreachable for 60.1 s"]


# --- the control plane ----------------------------------------------------------------------------


def test_the_control_plane_polls_at_its_pace_through_an_outage_and_raises_after_the_budget() -> (
    None
):
    time = FakeTime(now=1000.0)
    redis = FakeRedis(time)  # type: ignore[arg-type]
    redis.down = 10_000  # every subscription fails
    control = ControlPlane(
        policies=FakePolicies(),
        registry=FakeRegistry(),
        redis=redis,
        model=FakeModel(),
        serving=FakeServing(),
        cache_dir=Path("/nonexistent/cache"),
        metrics=Metrics(),
        worker="w1",
        poll_interval_s=2.0,
        clock=time.clock,
        sleep=time.sleep,
        retry=_retry(time, budget_s=10.0),
    )
    with pytest.raises(InfrastructureError, match="redis unreachable for 10"):
        asyncio.run(control.run())
    assert time.sleeps == [2.0] * 5  # the poll interval, not the backoff


def test_a_control_plane_failure_that_is_not_redis_is_never_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime(now=1000.0)
    policies = FakePolicies()

    async def refused() -> None:
        raise ValueError("a policy record the store refuses")

    policies.active = refused  # type: ignore[method-assign,assignment]
    control = ControlPlane(
        policies=policies,
        registry=FakeRegistry(),
        redis=FakeRedis(time),  # type: ignore[arg-type]
        model=FakeModel(),
        serving=FakeServing(),
        cache_dir=Path("/nonexistent/cache"),
        metrics=Metrics(),
        worker="w1",
        poll_interval_s=2.0,
        clock=time.clock,
        sleep=time.sleep,
        retry=_retry(time, budget_s=10.0),
    )

    async def main() -> None:
        task = asyncio.create_task(control.run())
        while time.now < 1100.0 and not task.done():  # ten budgets
            await asyncio.sleep(0)
        assert not task.done(), task.exception()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert "a policy record the store refuses" in caplog.text
    assert control.retry.outages.down_for("redis") is None  # Redis answered all along


# --- the trainer's ports --------------------------------------------------------------------------


@dataclass
class FlakyRegistry:
    """A Redis-backed registry whose every call fails once before it succeeds."""

    calls: list[str] = field(default_factory=list)

    async def active(self, policy: str) -> str:
        return self._call("active")

    async def rollback(self, policy: str) -> str:
        return self._call("rollback")

    def _call(self, name: str) -> str:
        self.calls.append(name)
        if self.calls.count(name) == 1:
            raise ConnectionError("redis down")
        return name

    def channel(self) -> str:
        return "not a coroutine: passed through"


def test_trainer_ports_retry_every_redis_call_but_a_rollback() -> None:
    time = FakeTime()
    registry = _retried(FlakyRegistry(), _retry(time), once=frozenset({"rollback"}))
    assert asyncio.run(registry.active("v1")) == "active"
    with pytest.raises(ConnectionError):
        asyncio.run(registry.rollback("v1"))
    assert registry.channel() == "not a coroutine: passed through"
    assert _retried(registry, None) is registry  # no policy (tests, scripts): the port itself
