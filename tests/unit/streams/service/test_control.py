"""Unit tests for a classify worker's control plane, with small fakes of our own interfaces (the
policy store, the adapter registry, the scorer's adapter slots, the classifier's `apply`, a Redis
pub/sub connection) and a fake clock:

- `routing_for`, the one owner of the review band and block threshold, and `next_state`, the pure
  decision of what to serve next, branch by branch;
- `ControlPlane.sync`: a policy change gives the new routing and the new version's adapter; a
  promotion swaps (metrics, `on_swap`, model_info); a refused adapter leaves the state as it was
  and is counted once; an older epoch never replaces a newer one;
- `ControlPlane.run`: a pub/sub message is followed at once, a lost one at the next poll, a Redis
  error is waited out with a warning and a retry;
- `PolicyRoutings`, the routing the collector reads per policy version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.policy.schema import Category, Example, Policy, PolicyError, ReviewBand
from adapters.registry.artifact import ArtifactError
from adapters.registry.store import ActiveRecord, RegistryError
from adapters.review.routing import RoutingPolicy
from models.adapter_file import AdapterFileError
from streams.service.control import ControlPlane, PolicyRoutings
from streams.service.metrics import Metrics
from streams.service.serving import ServingState, next_state, routing_for
from streams.wire.settings import PolicySettings

BASE = "model-1"
DEFAULTS = PolicySettings()  # v1: block at 0.5, review band [0.3, 0.7]
CONFIGURED = ServingState(routing_for(DEFAULTS), "boot")


def _policy(
    version: str = "v2",
    thresholds: tuple[float, ...] = (0.8,),
    band: tuple[float, float] = (0.2, 0.8),
    audit_rate: float | None = 0.1,
) -> Policy:
    return Policy(
        version=version,
        description="unsolicited promotion is now forbidden",
        categories=[
            Category(name=f"c{i}", definition="forbidden", block_threshold=t)
            for i, t in enumerate(thresholds)
        ],
        review_band=ReviewBand(low=band[0], high=band[1]),
        audit_rate=audit_rate,
        examples=[
            Example(text="50% off all shoes this week", label="c0"),
            Example(text="the meeting moved to 3pm", label="benign"),
        ],
    )


def _record(
    adapter_id: str, epoch: int, policy: str = "v1", action: str = "promote"
) -> ActiveRecord:
    return ActiveRecord(
        adapter_id=adapter_id,
        previous=None,
        epoch=epoch,
        action=action,
        actor="test",
        reason="test",
        at=0.0,
        policy_version=policy,
    )


# --- routing_for: one owner of the band and the threshold -----------------------------------------


def test_routing_of_a_published_policy_blocks_at_its_lowest_category_threshold() -> None:
    routing = routing_for(_policy(thresholds=(0.8, 0.6), band=(0.25, 0.75)))
    assert routing == RoutingPolicy("v2", block_threshold=0.6, review_low=0.25, review_high=0.75)


def test_routing_of_the_configured_defaults() -> None:
    configured = PolicySettings(version="v7", block_threshold=0.4, review_low=0.1, review_high=0.6)
    assert routing_for(configured) == RoutingPolicy("v7", 0.4, 0.1, 0.6)
    assert routing_for(DEFAULTS) == RoutingPolicy("v1", 0.5, 0.3, 0.7)


# --- next_state: the pure decision ---------------------------------------------------------------


def test_nothing_published_and_nothing_active_keeps_the_state() -> None:
    assert next_state(CONFIGURED, None, None) == CONFIGURED


def test_a_newer_promotion_for_the_policy_is_served() -> None:
    state = next_state(CONFIGURED, None, _record("a1", 4))
    assert state == ServingState(CONFIGURED.routing, "a1", epoch=4)


@pytest.mark.parametrize("epoch", [2, 5])
def test_an_older_or_equal_epoch_never_replaces_a_newer_one(epoch: int) -> None:
    serving = ServingState(CONFIGURED.routing, "a2", epoch=5)
    assert next_state(serving, None, _record("a1", epoch)) == serving


def test_a_record_for_another_policy_is_ignored() -> None:
    assert next_state(CONFIGURED, None, _record("a1", 4, policy="v2")) == CONFIGURED


def test_a_refused_adapter_is_not_tried_again() -> None:
    assert next_state(CONFIGURED, None, _record("bad", 4), refused=frozenset({"bad"})) == CONFIGURED


def test_a_promotion_of_the_adapter_already_serving_moves_the_epoch_only() -> None:
    assert next_state(CONFIGURED, None, _record("boot", 3)) == ServingState(
        CONFIGURED.routing, "boot", epoch=3
    )


def test_a_new_policy_brings_its_routing_and_transition_and_keeps_the_adapter() -> None:
    serving = ServingState(CONFIGURED.routing, "a1", epoch=9)
    state = next_state(serving, _policy(), None)
    assert state == ServingState(
        RoutingPolicy("v2", 0.8, 0.2, 0.8),
        "a1",  # until an adapter for v2 passes the gate
        epoch=0,  # the registry holds one active adapter per policy: v2's count afresh
        audit_rate=0.1,
        examples=("50% off all shoes this week",),  # what is forbidden now, not the benign one
    )
    assert state.policy_version == "v2"


def test_a_new_policys_first_promotion_is_served_whatever_its_epoch() -> None:
    serving = ServingState(CONFIGURED.routing, "a1", epoch=9)
    state = next_state(serving, _policy(), _record("a-v2", 3, policy="v2"))
    assert (state.policy_version, state.adapter_id, state.epoch) == ("v2", "a-v2", 3)


def test_the_same_policy_read_again_keeps_its_epoch() -> None:
    serving = next_state(CONFIGURED, _policy(), _record("a-v2", 3, policy="v2"))
    assert next_state(serving, _policy(), _record("a-v2", 3, policy="v2")) == serving
    assert next_state(serving, _policy(), _record("older", 2, policy="v2")) == serving


# --- fakes of our interfaces ---------------------------------------------------------------------


@dataclass
class FakePolicies:
    """`PolicyStore`: ``active`` raises ConnectionError while ``down`` is positive."""

    policy: Policy | None = None
    channel: str = "t:policy:events"
    down: int = 0
    gets: list[str] = field(default_factory=list)

    async def active(self) -> Policy | None:
        if self.down > 0:
            self.down -= 1
            raise ConnectionError("redis down")
        return self.policy

    async def get(self, version: str) -> Policy:
        self.gets.append(version)
        if self.policy is None or self.policy.version != version:
            raise PolicyError(f"unknown policy version {version!r}")
        return self.policy


@dataclass
class Fetched:
    path: Path


@dataclass
class FakeRegistry:
    """`AdapterRegistry`: one active record per policy; ``broken`` adapters fail to fetch."""

    active_records: dict[str, ActiveRecord] = field(default_factory=dict)
    broken: dict[str, Exception] = field(default_factory=dict)
    bases: dict[str, str] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    channel: str = "t:adapter:events"

    def promote(self, record: ActiveRecord) -> None:
        self.active_records[record.policy_version] = record

    async def active(self, policy: str) -> ActiveRecord | None:
        return self.active_records.get(policy)

    async def fetch(self, adapter_id: str, directory: Path, *, expected_base: str) -> Fetched:
        self.fetched.append(adapter_id)
        if adapter_id in self.broken:
            raise self.broken[adapter_id]
        base = self.bases.get(adapter_id, BASE)
        if base != expected_base:
            raise ArtifactError(f"adapter {adapter_id} was built for {base}, not {expected_base}")
        return Fetched(directory / "adapter.onnx_adapter")


@dataclass
class FakeModel:
    """The scorer's adapter slots."""

    model_version: str = BASE
    loaded_adapters: list[str] = field(default_factory=lambda: ["boot"])
    unfit: set[str] = field(default_factory=set)

    def load_adapter(self, adapter_id: str, path: Path) -> None:
        if adapter_id in self.unfit:
            raise AdapterFileError(f"{path}: tensor shapes do not fit {self.model_version}")
        self.loaded_adapters.append(adapter_id)


@dataclass
class FakeServing:
    """The classifier's `state` and `apply`."""

    state: ServingState = CONFIGURED
    applied: list[ServingState] = field(default_factory=list)

    def apply(self, state: ServingState) -> None:
        self.applied.append(state)
        self.state = state


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakePubSub:
    """A pub/sub connection; waiting for a message moves the fake clock instead of waiting."""

    clock: FakeClock
    messages: list[dict[str, Any]] = field(default_factory=list)
    channels: tuple[str, ...] = ()
    closed: bool = False
    fail_subscribe: bool = False

    async def subscribe(self, *channels: str) -> None:
        if self.fail_subscribe:
            raise ConnectionError("redis down")
        self.channels = channels

    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        if self.messages:
            return self.messages.pop(0)
        self.clock.now += timeout or 0.0
        return None

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeRedis:
    clock: FakeClock
    down: int = 0  # subscriptions that fail
    connections: list[FakePubSub] = field(default_factory=list)

    def pubsub(self) -> FakePubSub:
        connection = FakePubSub(self.clock, fail_subscribe=self.down > 0)
        self.down = max(0, self.down - 1)
        self.connections.append(connection)
        return connection


@dataclass
class Plane:
    control: ControlPlane
    policies: FakePolicies
    registry: FakeRegistry
    model: FakeModel
    serving: FakeServing
    redis: FakeRedis
    clock: FakeClock
    metrics: Metrics
    swaps: list[tuple[str, str]]
    sleeps: list[float]

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def sync(self) -> bool:
        return asyncio.run(self.control.sync())


def _plane(poll_interval_s: float = 2.0) -> Plane:
    clock, metrics = FakeClock(), Metrics()
    policies, registry, model, serving = FakePolicies(), FakeRegistry(), FakeModel(), FakeServing()
    redis = FakeRedis(clock)
    swaps: list[tuple[str, str]] = []
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    control = ControlPlane(
        policies=policies,
        registry=registry,
        redis=redis,
        model=model,
        serving=serving,
        cache_dir=Path("/nonexistent/cache"),
        metrics=metrics,
        worker="w1",
        poll_interval_s=poll_interval_s,
        on_swap=lambda previous, new: swaps.append((previous, new)),
        clock=clock,
        sleep=sleep,
    )
    return Plane(control, policies, registry, model, serving, redis, clock, metrics, swaps, sleeps)


# --- sync ----------------------------------------------------------------------------------------


def test_nothing_published_changes_nothing() -> None:
    p = _plane()
    assert p.sync() is False
    assert p.serving.applied == []
    assert p.registry.fetched == []


def test_a_promotion_is_fetched_loaded_and_swapped_in() -> None:
    p = _plane()
    p.registry.promote(_record("a1", 4))
    assert p.sync() is True
    assert p.serving.state == ServingState(CONFIGURED.routing, "a1", epoch=4)
    assert p.registry.fetched == ["a1"]
    assert p.model.loaded_adapters == ["boot", "a1"]  # the previous one stays, for a rollback
    assert p.swaps == [("boot", "a1")]
    assert p.sample("borderline_adapter_swaps_total", {"result": "promote"}) == 1
    assert p.sample("borderline_adapter_swap_seconds_count") == 1
    info = {"model_version": BASE, "adapter_version": "a1", "policy_version": "v1"}
    assert p.sample("borderline_model_info", info) == 1

    assert p.sync() is False  # same epoch: nothing to do
    assert len(p.serving.applied) == 1

    # a rollback to the adapter still loaded: no fetch, a swap counted as a rollback
    p.registry.promote(_record("boot", 5, action="rollback"))
    assert p.sync() is True
    assert p.serving.state.adapter_id == "boot"
    assert p.registry.fetched == ["a1"]
    assert p.swaps == [("boot", "a1"), ("a1", "boot")]
    assert p.sample("borderline_adapter_swaps_total", {"result": "rollback"}) == 1


def test_a_promotion_of_the_serving_adapter_moves_the_epoch_without_a_swap() -> None:
    p = _plane()
    p.registry.promote(_record("boot", 3))
    assert p.sync() is False
    assert p.serving.state.epoch == 3
    assert p.swaps == []
    assert p.sample("borderline_adapter_swaps_total", {"result": "promote"}) == 0


def test_a_policy_change_brings_the_new_routing_and_the_new_versions_adapter() -> None:
    p = _plane()
    p.registry.promote(_record("a1", 4))
    p.sync()
    p.policies.policy = _policy()
    p.registry.promote(_record("a-v2", 2, policy="v2"))  # epochs are global: v2's may be older
    assert p.sync() is True
    state = p.serving.state
    assert state.routing == RoutingPolicy("v2", 0.8, 0.2, 0.8)
    assert (state.adapter_id, state.epoch) == ("a-v2", 2)
    assert (state.audit_rate, state.examples) == (0.1, ("50% off all shoes this week",))
    assert p.swaps == [("boot", "a1"), ("a1", "a-v2")]
    info = {"model_version": BASE, "adapter_version": "a-v2", "policy_version": "v2"}
    assert p.sample("borderline_model_info", info) == 1


def test_a_policy_without_an_adapter_yet_keeps_the_current_one() -> None:
    p = _plane()
    p.policies.policy = _policy()
    assert p.sync() is True
    assert (p.serving.state.policy_version, p.serving.state.adapter_id) == ("v2", "boot")
    assert p.swaps == []
    info = {"model_version": BASE, "adapter_version": "boot", "policy_version": "v2"}
    assert p.sample("borderline_model_info", info) == 1


@pytest.mark.parametrize(
    ("adapter_id", "setup"),
    [
        ("corrupt", lambda r, m: r.broken.update(corrupt=ArtifactError("sha256 mismatch"))),
        ("foreign", lambda r, m: r.bases.update(foreign="m-other")),
        ("unfit", lambda r, m: m.unfit.add("unfit")),
        ("gone", lambda r, m: r.broken.update(gone=RegistryError("unknown adapter 'gone'"))),
    ],
)
def test_a_refused_adapter_leaves_the_state_unchanged_and_is_counted_once(
    adapter_id: str,
    setup: Callable[[FakeRegistry, FakeModel], object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = _plane()
    setup(p.registry, p.model)
    p.registry.promote(_record(adapter_id, 4))
    with caplog.at_level(logging.ERROR, logger="streams.service.control"):
        assert p.sync() is False
    assert p.serving.state == CONFIGURED
    assert p.serving.applied == []
    assert adapter_id not in p.model.loaded_adapters
    assert p.sample("borderline_adapter_swaps_total", {"result": "refused"}) == 1
    assert f"adapter {adapter_id} refused, keeping boot" in caplog.text

    assert p.sync() is False  # not fetched again, not counted again
    assert p.registry.fetched == [adapter_id]
    assert p.sample("borderline_adapter_swaps_total", {"result": "refused"}) == 1

    # a good adapter promoted after the refusal is taken up
    p.registry.promote(_record("good", 5))
    assert p.sync() is True
    assert p.serving.state.adapter_id == "good"
    assert p.sample("borderline_adapter_swaps_total", {"result": "refused"}) == 1


def test_a_refused_adapter_for_a_new_policy_still_brings_the_policy() -> None:
    p = _plane()
    p.registry.broken["bad-v2"] = ArtifactError("sha256 mismatch")
    p.policies.policy = _policy()
    p.registry.promote(_record("bad-v2", 6, policy="v2"))
    assert p.sync() is True
    state = p.serving.state
    assert (state.policy_version, state.adapter_id, state.epoch) == ("v2", "boot", 0)
    assert p.sample("borderline_adapter_swaps_total", {"result": "refused"}) == 1


def test_an_older_epoch_from_the_registry_never_replaces_a_newer_one() -> None:
    p = _plane()
    p.registry.promote(_record("a2", 9))
    p.sync()
    p.registry.promote(_record("a1", 7))  # e.g. read from a lagging replica
    assert p.sync() is False
    assert p.serving.state == ServingState(CONFIGURED.routing, "a2", epoch=9)
    assert p.registry.fetched == ["a2"]


# --- run: the one follow loop --------------------------------------------------------------------


async def _until(condition: Callable[[], bool], what: str, steps: int = 2000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def _running(p: Plane, body: Callable[[asyncio.Task[None]], Awaitable[None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(p.control.run())
        try:
            await body(task)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


def test_run_subscribes_to_both_channels_and_follows_a_message_at_once() -> None:
    p = _plane(poll_interval_s=30.0)

    async def body(task: asyncio.Task[None]) -> None:
        await _until(lambda: bool(p.redis.connections and p.redis.connections[0].channels), "sub")
        connection = p.redis.connections[0]
        assert connection.channels == ("t:policy:events", "t:adapter:events")
        await _until(lambda: p.clock.now > 1000.0, "the first poll and a wait")
        p.clock.now = 1001.0  # less than a poll interval later
        p.registry.promote(_record("a1", 4))
        connection.messages.append({"type": "message", "data": b"{}"})
        await _until(lambda: p.serving.state.adapter_id == "a1", "the promotion followed")
        assert p.clock.now < 1000.0 + 30.0  # before the next poll was due

    _running(p, body)
    assert p.redis.connections[0].closed  # cancelling closed the subscription


def test_a_lost_message_costs_at_most_one_poll_interval() -> None:
    p = _plane(poll_interval_s=2.0)

    async def body(task: asyncio.Task[None]) -> None:
        await _until(lambda: p.clock.now > 1000.0, "the first poll and a wait")
        promoted_at = p.clock.now
        p.registry.promote(_record("a1", 4))  # its message is lost
        await _until(lambda: p.serving.state.adapter_id == "a1", "the next poll")
        assert p.clock.now - promoted_at <= 2.0 + 1e-9

    _running(p, body)


def test_a_redis_outage_is_waited_out_with_a_warning_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = _plane(poll_interval_s=2.0)
    p.redis.down = 1  # the first subscription fails
    p.policies.down = 1  # and the first read on the next one
    p.registry.promote(_record("a1", 4))

    async def body(task: asyncio.Task[None]) -> None:
        await _until(lambda: p.serving.state.adapter_id == "a1", "followed after the outage")

    with caplog.at_level(logging.WARNING, logger="streams.service.control"):
        _running(p, body)
    assert p.sleeps == [2.0, 2.0]  # one poll interval after each failure
    assert p.sample("borderline_infrastructure_retries_total", {"target": "redis"}) == 2
    assert caplog.text.count("unreachable") == 2
    assert [c.closed for c in p.redis.connections] == [True, True, True]


# --- the collector's routing per policy version --------------------------------------------------


def test_policy_routings_reads_a_published_version_once_and_defaults_otherwise() -> None:
    store = FakePolicies(policy=_policy())
    routings = PolicyRoutings(store, DEFAULTS)

    async def main() -> None:
        assert await routings.routing("v2") == RoutingPolicy("v2", 0.8, 0.2, 0.8)
        assert await routings.routing("v2") == RoutingPolicy("v2", 0.8, 0.2, 0.8)
        assert await routings.routing("v1") == RoutingPolicy("v1", 0.5, 0.3, 0.7)

    asyncio.run(main())
    assert store.gets == ["v2", "v1"]


# --- the swap gate -------------------------------------------------------------------------------


@dataclass
class RecordingGate:
    """The classifier's `SwapGate` as the control plane sees it: closed while it switches."""

    is_closed: bool = False
    closings: int = 0

    @contextlib.contextmanager
    def closed(self) -> Any:
        self.is_closed, self.closings = True, self.closings + 1
        try:
            yield
        finally:
            self.is_closed = False


def test_the_gate_is_closed_from_the_decision_to_swap_until_the_switch() -> None:
    p = _plane()
    gate = RecordingGate()
    p.control.gate = gate
    during: list[bool] = []
    fetch = p.registry.fetch

    async def watched_fetch(adapter_id: str, directory: Path, *, expected_base: str) -> Any:
        during.append(gate.is_closed)
        return await fetch(adapter_id, directory, expected_base=expected_base)

    p.registry.fetch = watched_fetch  # type: ignore[method-assign]
    apply = p.serving.apply
    p.serving.apply = lambda state: (during.append(gate.is_closed), apply(state))[1]  # type: ignore[method-assign]
    p.registry.promote(_record("a1", 4))
    assert p.sync() is True
    assert during == [True, True] and not gate.is_closed  # fetch and apply behind the gate

    p.policies.policy = _policy()  # a policy change keeping the adapter: no gate
    assert p.sync() is True
    assert gate.closings == 1

    p.registry.broken["bad"] = ArtifactError("sha256 mismatch")
    p.registry.promote(_record("bad", 9, policy="v2"))
    assert p.sync() is False
    assert gate.closings == 2 and not gate.is_closed  # opened again after a refusal
