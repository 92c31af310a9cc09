"""The control plane of a classify worker: one follower of the policy store and the adapter
registry. It listens on both pub/sub channels and also polls, so a lost message costs at most one
poll interval; on either it reads the active policy and the active adapter for that policy,
decides the next `ServingState` (`streams.service.serving.next_state`), fetches a new adapter
through `AdapterRegistry.fetch` (sha256 and base model verified) and loads it next to the current
one, then hands the state to the classifier's one method, `Classifier.apply`, which swaps it in
between batches. The previous adapter stays loaded for an instant rollback.

A corrupted adapter, one for another base, or one the trainer did not sign (the registry's
`AdapterTrust`: unsigned, signed with another key, tampered with) is refused (counted once, the
signature refusals by reason, logged with the reason) and the active one keeps serving. After
every look the worker says whether it serves what the registry names active (a mismatch gauge)
and whether that record is a forced promotion. A Redis outage is waited out, polling at its own
pace, and reported to the process's retry policy: logged once per outage interval, and an
`InfrastructureError` (the worker exits) once Redis has been unreachable for the outage budget.

`PolicyRoutings` gives the label collector the routing each policy version was decided under.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from adapters.policy.schema import Policy, PolicyError
from adapters.registry.artifact import ArtifactError
from adapters.registry.signing import SignatureError
from adapters.registry.store import ActiveRecord, RegistryError
from adapters.review.routing import RoutingPolicy
from models.adapter_file import AdapterFileError
from streams.service.metrics import Metrics
from streams.service.outage import Outages
from streams.service.retry import Retrying, RetryPolicy, is_infrastructure
from streams.service.serving import ServingState, next_state, routing_for
from streams.wire.settings import PolicySettings

__all__ = ["ControlPlane", "PolicyRoutings"]

log = logging.getLogger(__name__)


# --- the ports, each satisfied by one of our classes (named in its docstring) ---------------------


class PolicySource(Protocol):
    """`adapters.policy.store.PolicyStore`."""

    @property
    def channel(self) -> str: ...

    async def active(self) -> Policy | None: ...


class Fetched(Protocol):
    """`adapters.registry.artifact.AdapterArtifact`: a verified adapter on disk."""

    @property
    def path(self) -> Path: ...


class AdapterSource(Protocol):
    """`adapters.registry.store.AdapterRegistry`."""

    @property
    def channel(self) -> str: ...

    async def active(self, policy: str) -> ActiveRecord | None: ...

    async def fetch(self, adapter_id: str, directory: Path, *, expected_base: str) -> Fetched: ...


class AdapterLoader(Protocol):
    """`models.scorer.Scorer`."""

    model_version: str

    @property
    def loaded_adapters(self) -> list[str]: ...

    def load_adapter(self, adapter_id: str, path: Path) -> None: ...


class Served(Protocol):
    """`streams.service.classify.Classifier`."""

    @property
    def state(self) -> ServingState: ...

    def apply(self, state: ServingState) -> None: ...


class Gate(Protocol):
    """`streams.service.classify.SwapGate`: batches wait while it is closed."""

    def closed(self) -> contextlib.AbstractContextManager[None]: ...


class Subscription(Protocol):
    """A `redis.asyncio` pub/sub connection."""

    async def subscribe(self, *channels: str) -> Any: ...

    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> Any: ...

    async def aclose(self) -> None: ...


class PubSubClient(Protocol):
    """A `redis.asyncio.Redis` client."""

    def pubsub(self) -> Subscription: ...


# --- the follower ---------------------------------------------------------------------------------


class ControlPlane:
    def __init__(
        self,
        *,
        policies: PolicySource,
        registry: AdapterSource,
        redis: PubSubClient,
        model: AdapterLoader,
        serving: Served,
        cache_dir: Path,
        metrics: Metrics,
        worker: str,
        poll_interval_s: float = 2.0,
        on_swap: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry: Retrying | None = None,
        gate: Gate | None = None,
    ) -> None:
        """``on_swap(previous, new)`` is called after every adapter swap: the drift detectors
        start a fresh reference, since a new adapter moves the scores and embeddings on purpose.
        ``retry`` is the process's retry policy, which Redis failures are reported to. ``gate``
        (the classifier's) is closed from deciding to switch adapters until the switch."""
        self.policies = policies
        self.registry = registry
        self.redis = redis
        self.model = model
        self.serving = serving
        self.cache_dir = cache_dir
        self.metrics = metrics
        self.worker = worker
        self.poll_interval_s = poll_interval_s
        self.on_swap = on_swap
        self.clock = clock
        self.sleep = sleep
        self.retry = retry or Retrying(RetryPolicy(), outages=Outages(clock=clock), metrics=metrics)
        self.gate = gate
        self._refused: set[str] = set()
        self._lock = asyncio.Lock()

    async def sync(self, received_at: float | None = None) -> bool:
        """Bring the classifier to the active policy and its active adapter; True if what a batch
        is decided with changed (the adapter or the routing). ``received_at`` (epoch seconds) is
        when the worker learnt of the change."""
        async with self._lock:
            current = self.serving.state
            policy = await self.policies.active()
            record = await self.registry.active(
                current.policy_version if policy is None else policy.version
            )
            target = next_state(current, policy, record, refused=frozenset(self._refused))
            if target == current:
                self._watch(record, current)
                return False
            started = received_at or self.clock()
            swapping = target.adapter_id != current.adapter_id
            with self.gate.closed() if swapping and self.gate else contextlib.nullcontext():
                if swapping and not await self._load(target.adapter_id, keeping=current.adapter_id):
                    target = next_state(current, policy, record, refused=frozenset(self._refused))
                    if target == current:
                        self._watch(record, current)
                        return False
                self.serving.apply(target)
            self._announce(current, target, record, started)
            self._watch(record, target)
            return (target.adapter_id, target.routing) != (current.adapter_id, current.routing)

    async def _load(self, adapter_id: str, *, keeping: str) -> bool:
        """Fetch, verify and load ``adapter_id``; False (counted, logged) if it is refused."""
        if adapter_id in self.model.loaded_adapters:
            return True
        try:
            artifact = await self.registry.fetch(
                adapter_id, self.cache_dir / adapter_id, expected_base=self.model.model_version
            )
            self.model.load_adapter(adapter_id, artifact.path)
        except (ArtifactError, AdapterFileError, RegistryError) as exc:
            self._refused.add(adapter_id)
            self.metrics.adapter_swaps.labels(result="refused").inc()
            if isinstance(exc, SignatureError):
                self.metrics.adapter_signature_refusals.labels(reason=exc.reason).inc()
            log.error("adapter %s refused, keeping %s: %s", adapter_id, keeping, exc)
            return False
        return True

    def _watch(self, record: ActiveRecord | None, served: ServingState) -> None:
        """The registry/worker agreement: 1 when the registry names another adapter active for
        the policy served (refused, or not swapped in yet), and whether that record was forced."""
        named = record is not None and record.policy_version == served.policy_version
        mismatch = named and record is not None and record.adapter_id != served.adapter_id
        self.metrics.adapter_mismatch.set(1 if mismatch else 0)
        self.metrics.adapter_forced.set(1 if named and record is not None and record.forced else 0)

    def _announce(
        self,
        current: ServingState,
        target: ServingState,
        record: ActiveRecord | None,
        started: float,
    ) -> None:
        if target.adapter_id != current.adapter_id:
            swap_s = self.clock() - started
            action = record.action if record is not None else "promote"
            self.metrics.adapter_swaps.labels(result=action).inc()
            self.metrics.adapter_swap_seconds.observe(swap_s)
            if self.on_swap is not None:
                self.on_swap(current.adapter_id, target.adapter_id)
            log.info(
                "adapter swap worker=%s from=%s to=%s action=%s epoch=%d swap_ms=%.2f "
                "received=%.6f",
                self.worker,
                current.adapter_id,
                target.adapter_id,
                action,
                target.epoch,
                swap_s * 1000,
                started,
            )
        if target.policy_version != current.policy_version:
            log.info(
                "policy %s active: band [%s, %s], %d examples",
                target.policy_version,
                target.routing.review_low,
                target.routing.review_high,
                len(target.examples),
            )
        if (target.adapter_id, target.policy_version) != (
            current.adapter_id,
            current.policy_version,
        ):
            self._set_info(target)

    def _set_info(self, state: ServingState) -> None:
        self.metrics.model_info.info(
            {
                "model_version": self.model.model_version,
                "adapter_version": state.adapter_id,
                "policy_version": state.policy_version,
            }
        )

    async def run(self) -> None:
        """Follow both channels until cancelled. A Redis outage is waited out, one poll interval
        between tries; `InfrastructureError` once it outlasted the outage budget. Any other
        failure (a record the stores refuse, say) is logged and tried again, never fatal: the
        current state keeps serving."""
        self._set_info(self.serving.state)
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_infrastructure(exc):
                    self.retry.failed("redis", exc)  # once per interval; raises when spent
                else:
                    log.warning(
                        "control plane: %r; following again in %g s", exc, self.poll_interval_s
                    )
                await self.sleep(self.poll_interval_s)

    async def _follow(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.policies.channel, self.registry.channel)
            self.retry.succeeded("redis")
            last_poll = float("-inf")
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.poll_interval_s
                )
                now = self.clock()
                if message is not None or now - last_poll >= self.poll_interval_s:
                    last_poll = now
                    await self.sync(received_at=now)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


# --- routing by policy version, for the collector -------------------------------------------------


class PolicyStoreReader(Protocol):
    """`adapters.policy.store.PolicyStore`."""

    async def get(self, version: str) -> Policy: ...


class PolicyRoutings:
    """The routing each policy version was decided under: a published version's own document,
    else the configured defaults (what a worker serves before any policy is published). A
    published version never names another document, so each is read once."""

    def __init__(self, store: PolicyStoreReader, defaults: PolicySettings) -> None:
        self.store = store
        self.defaults = defaults
        self._published: dict[str, RoutingPolicy] = {}

    async def routing(self, policy_version: str) -> RoutingPolicy:
        known = self._published.get(policy_version)
        if known is not None:
            return known
        try:
            policy = await self.store.get(policy_version)
        except PolicyError:
            return routing_for(self.defaults)
        self._published[policy_version] = routing_for(policy)
        return self._published[policy_version]
