"""The trainer's ports: what `streams.service.trainer.Trainer` needs of the world, one Protocol
each (labels, policies, the registry, its verdicts and drift flags, adapter events, the model
work), and the real ones, built once when the trainer starts (`open_ports`): the Redis stores,
ONE long-lived Kafka producer for adapter events, and the product's scorer for judging. Given the
process's retry policy, every broker and Redis call of the real ports rides out an outage under
it, except a rollback (applied twice, it would step back twice)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from adapters.adapt.candidate import (
    Judgement,
    candidate_epochs,
    decisions,
    judge,
    train_candidate,
)
from adapters.adapt.verdicts import GateRecord, TrainerStatus, VerdictStore
from adapters.labels.store import LabeledExample, LabelStore, ReviewedItem
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import ActiveRecord, AdapterRegistry
from models.adapter_file import AdapterFileError
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.service.metrics import Metrics
from streams.service.reader import read_recent
from streams.service.record import KafkaJournal
from streams.service.retry import Retrying
from streams.service.trust import signing_key, signing_verdicts, trainer_trust
from streams.wire.messages import AdapterEvent, encode
from streams.wire.security import KafkaSecurity
from streams.wire.settings import Settings

__all__ = [
    "EventPort",
    "KafkaEvents",
    "LabPort",
    "LabelPort",
    "LeasePort",
    "PolicyPort",
    "RegistryPort",
    "ScorerLab",
    "StatusPort",
    "TrainerPorts",
    "VerdictPort",
    "judge_live",
    "open_ports",
]

RECENT_ITEMS = 300
"""Recent live items scored in shadow by candidate and incumbent."""

T = TypeVar("T")


class LabelPort(Protocol):
    async def dataset(
        self, policy: str, split: Literal["train", "eval"], *, eval_share: float = ...
    ) -> list[LabeledExample]: ...
    async def labelled_since(self, policy: str, since: float) -> list[str]: ...
    async def all_votes(self, policy: str) -> dict[str, dict[str, str]]: ...
    async def excluded(self) -> set[str]: ...
    async def reviewed_items(self, item_ids: Sequence[str]) -> dict[str, ReviewedItem]: ...


class PolicyPort(Protocol):
    async def active_version(self) -> str | None: ...


class RegistryPort(Protocol):
    async def active(self, policy: str) -> ActiveRecord | None: ...
    async def register(self, artifact: AdapterArtifact) -> bool: ...
    async def promote(
        self,
        adapter_id: str,
        *,
        actor: str,
        reason: str,
        policy: str | None = ...,
        now: float | None = ...,
    ) -> ActiveRecord: ...
    async def rollback(
        self, policy: str, *, actor: str, reason: str, now: float | None = ...
    ) -> ActiveRecord: ...


class VerdictPort(Protocol):
    async def record(self, report: GateRecord) -> None: ...
    async def drift_flags(self) -> set[str]: ...
    async def clear_flags(self) -> None: ...


class StatusPort(Protocol):
    """Where the trainer leaves what its last step did or waits for, for others to show."""

    async def set_status(self, status: TrainerStatus) -> None: ...


class LeasePort(Protocol):
    async def check(self) -> None:
        """Raise `streams.service.lease.LeaseLost` unless this trainer holds the lease."""
        ...


class EventPort(Protocol):
    async def announce(self, event: AdapterEvent) -> None: ...


class LabPort(Protocol):
    """The model work: where a candidate starts from, training it, judging it against the
    incumbent, and the live adapter's decisions on fresh labelled items."""

    async def prepare(self, active: ActiveRecord | None) -> tuple[AdapterArtifact | None, str]:
        """The adapter a candidate starts from (None: the base) and the incumbent's id."""
        ...

    async def train(
        self,
        examples: Sequence[LabeledExample],
        *,
        start: AdapterArtifact | None,
        policy_version: str,
    ) -> AdapterArtifact: ...
    async def judge(
        self, candidate: AdapterArtifact, incumbent_id: str, evaluation: Sequence[LabeledExample]
    ) -> Judgement: ...
    async def live_decisions(
        self, adapter_id: str, examples: Sequence[LabeledExample]
    ) -> list[str]: ...


@dataclass(frozen=True)
class TrainerPorts:
    """What the trainer works with; ``lease``, when given, is checked before every promotion
    and rollback (`streams.service.lease`: one trainer at a time)."""

    labels: LabelPort
    policies: PolicyPort
    registry: RegistryPort
    verdicts: VerdictPort
    events: EventPort
    lab: LabPort
    clock: Callable[[], float] = field(default=time.time)
    metrics: Metrics | None = None
    status: StatusPort | None = None
    lease: LeasePort | None = None


async def _io(retry: Retrying | None, target: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call`` under the retry policy, or once when there is none (tests, scripts)."""
    return await call() if retry is None else await retry(target, call)


class _RetriedRedis:
    """A Redis-backed port whose coroutine methods run under the retry policy (target
    ``redis``), except those in ``once``, which are not safe to repeat."""

    def __init__(self, port: object, retry: Retrying, once: frozenset[str] = frozenset()) -> None:
        self._port = port
        self._retry = retry
        self._once = once

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if name in self._once or not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._retry("redis", lambda: attr(*args, **kwargs))

        return call


P = TypeVar("P")


def _retried(port: P, retry: Retrying | None, once: frozenset[str] = frozenset()) -> P:
    return port if retry is None else cast(P, _RetriedRedis(port, retry, once))


class KafkaEvents:
    """Adapter events on their topic through one producer, started and stopped by its owner."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, retry: Retrying | None = None
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.retry = retry

    async def announce(self, event: AdapterEvent) -> None:
        value, key = encode(event), event.adapter_id.encode()
        await _io(
            self.retry, "kafka", lambda: self.producer.send_and_wait(self.topic, value, key=key)
        )


async def judge_live(
    scorer: Scorer,
    adapter_id: str,
    examples: Sequence[LabeledExample],
    registry: AdapterRegistry,
    settings: Settings,
) -> list[str]:
    """The label ``adapter_id`` gives each example, through the product's scorer (the adapter
    fetched from the registry and loaded first when the scorer does not hold it yet)."""
    await ensure_loaded(scorer, adapter_id, registry, settings)
    return decisions(scorer, adapter_id, [e.text for e in examples])


async def ensure_loaded(
    scorer: Scorer,
    adapter_id: str,
    registry: AdapterRegistry,
    settings: Settings,
    *,
    into: Path | None = None,
) -> None:
    """``adapter_id`` fetched from the registry (verified) into ``into`` (default: the worker's
    adapter cache) and loaded into the scorer as a worker loads it, unless the scorer holds it
    already; `AdapterFileError` when onnxruntime cannot load it. The registry's test load before a
    rollback (``AdapterRegistry(loads=...)``), in the trainer and in `borderline adapters
    rollback`."""
    if adapter_id in scorer.loaded_adapters:
        return
    manifest = ModelManifest.read(settings.model.dir, verify=False)
    artifact = await registry.fetch(
        adapter_id,
        (into or settings.worker.adapter_cache_dir) / adapter_id,
        expected_base=manifest.model_version,
    )
    try:
        scorer.load_adapter(adapter_id, artifact.path)
    except AdapterFileError:
        raise
    except Exception as exc:  # onnxruntime's own errors: the file is not a loadable adapter
        raise AdapterFileError(f"adapter {adapter_id} does not load: {exc}") from exc


class ScorerLab:
    """The real model work: LoRA training from the active adapter (torch, in a thread) and
    judging through the product's scorer (one onnxruntime session, adapters switched per run)."""

    def __init__(
        self,
        scorer: Scorer,
        registry: AdapterRegistry,
        settings: Settings,
        *,
        out_dir: Path,
        retry: Retrying | None = None,
    ) -> None:
        self.scorer = scorer
        self.registry = registry
        self.settings = settings
        self.out_dir = out_dir
        self.retry = retry
        self.base = ModelManifest.read(settings.model.dir, verify=False).model_version

    async def prepare(self, active: ActiveRecord | None) -> tuple[AdapterArtifact | None, str]:
        model_dir = self.settings.model.dir
        start = None
        if active is not None:
            start = await _io(
                self.retry,
                "redis",
                functools.partial(
                    self.registry.fetch,
                    active.adapter_id,
                    self.out_dir / active.adapter_id,
                    expected_base=self.base,
                ),
            )
        elif (model_dir / BOOTSTRAP_ARTIFACT).is_dir():
            start = AdapterArtifact.load(model_dir / BOOTSTRAP_ARTIFACT, expected_base=self.base)
        incumbent = active.adapter_id if active else self.scorer.adapter_version
        if incumbent not in self.scorer.loaded_adapters and start is not None:
            self.scorer.load_adapter(start.adapter_id, start.path)
        return start, incumbent

    async def train(
        self,
        examples: Sequence[LabeledExample],
        *,
        start: AdapterArtifact | None,
        policy_version: str,
    ) -> AdapterArtifact:
        return await asyncio.to_thread(
            train_candidate,
            self.settings.model.dir,
            examples,
            self.out_dir,
            start_from=start,
            policy_version=policy_version,
            seed=self.settings.review.seed,
            epochs=self._epochs(len(examples)),
            progress=True,
        )

    def _epochs(self, examples: int) -> int | None:
        """Epochs for about ``gate.train_examples`` examples seen (`candidate_epochs`); None
        without examples (`train_candidate` says why it cannot train)."""
        target = self.settings.gate.train_examples
        return candidate_epochs(examples, target=target) if examples else None

    async def judge(
        self, candidate: AdapterArtifact, incumbent_id: str, evaluation: Sequence[LabeledExample]
    ) -> Judgement:
        kafka = self.settings.kafka
        assert kafka.bootstrap_servers
        recent = await _io(
            self.retry,
            "kafka",
            functools.partial(
                read_recent,
                kafka.bootstrap_servers,
                kafka.topics.items,
                RECENT_ITEMS,
                security=KafkaSecurity.of(kafka),
            ),
        )
        texts = [m["text"] for m in recent if isinstance(m.get("text"), str)]
        return await asyncio.to_thread(
            judge, self.scorer, candidate, incumbent_id, evaluation, texts
        )

    async def live_decisions(
        self, adapter_id: str, examples: Sequence[LabeledExample]
    ) -> list[str]:
        return await _io(
            self.retry,
            "redis",
            functools.partial(
                judge_live, self.scorer, adapter_id, examples, self.registry, self.settings
            ),
        )


@asynccontextmanager
async def open_ports(
    settings: Settings,
    redis: Redis,
    scorer: Scorer,
    *,
    out_dir: Path,
    metrics: Metrics | None = None,
    retry: Retrying | None = None,
    lease: LeasePort | None = None,
) -> AsyncIterator[TrainerPorts]:
    """The trainer's ports on these clients, with the event producer started; it stops on
    exit. The Redis client stays its caller's. With ``retry``, broker and Redis calls ride out
    an outage (see module doc)."""
    prefix = settings.redis.key_prefix
    kafka = settings.kafka
    assert kafka.bootstrap_servers
    bootstrap = kafka.bootstrap_servers
    producer = await _io(retry, "kafka", lambda: _started_producer(bootstrap, settings))
    # every registration and promotion also goes on the record, so a lost Redis is rebuilt
    registry = AdapterRegistry(redis, prefix, journal=KafkaJournal(producer, kafka.topics))
    # adapters that pass the gate are signed (streams.service.trust); a rollback goes only to
    # one that verifies, while training may start from whatever is active
    key = signing_key(settings)
    # ... and loads: a rollback never points the registry at an adapter no worker can load
    gated = AdapterRegistry(
        redis,
        prefix,
        journal=registry.journal,
        trust=trainer_trust(settings, key),
        loads=functools.partial(ensure_loaded, scorer, registry=registry, settings=settings),
    )
    try:
        yield TrainerPorts(
            labels=_retried(LabelStore(redis, prefix), retry),
            policies=_retried(PolicyStore(redis, prefix), retry),
            registry=_retried(gated, retry, once=frozenset({"rollback"})),
            verdicts=_retried(signing_verdicts(VerdictStore(redis, prefix), registry, key), retry),
            events=KafkaEvents(producer, kafka.topics.adapter_events, retry),
            lab=ScorerLab(scorer, registry, settings, out_dir=out_dir, retry=retry),
            metrics=metrics,
            status=_retried(VerdictStore(redis, prefix), retry),
            lease=lease,
        )
    finally:
        await producer.stop()


async def _started_producer(bootstrap_servers: str, settings: Settings) -> AIOKafkaProducer:
    """A started producer (a fresh one per try: one that failed to start is not reused)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        request_timeout_ms=int(settings.resilience.call_timeout_s * 1000),
        **KafkaSecurity.of(settings.kafka).options(),
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
