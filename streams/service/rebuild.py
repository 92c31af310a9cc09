"""Rebuilding Redis from the record: read the topics from their beginning to their current end,
replay every record by time through the same store methods the live service calls
(`LabelStore.register_reviewers`, `clear`, `record_requests`, `record_asked` and `add_label`,
`ReviewerKeys.issue` with the recorded nonce, the console's accounts and tokens through
`AccountBook`, the collector's `LabelAdmission` before a label, `PolicyStore.publish`,
`AdapterRegistry.register`, `promote` and `rollback`), and mark the store complete
(``{prefix}:store:epoch``). Idempotent: what the store holds already is left as it is, so a second
rebuild changes nothing.

`StoreGuard` is the collector's check: a store without the marker (a Redis restarted empty, or
restored from before the marker) or with an older epoch is rebuilt before new labels are stored.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.policy.schema import Policy, PolicyError
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import (
    ADAPTER_FILE,
    BOOTSTRAP_ARTIFACT,
    MANIFEST_FILE,
    AdapterArtifact,
    AdapterManifest,
    ArtifactError,
)
from adapters.registry.signing import AdapterSignature
from adapters.registry.store import AdapterRegistry, RegistryError
from models.manifest import ModelManifest
from streams.service.accounts import AccountBook
from streams.service.admission import Admission, LabelAdmission
from streams.service.reader import partitions_of
from streams.service.replay import (
    STORE_EPOCH,
    Recorded,
    StoreMarker,
    activation_step,
    policy_applied,
    replay_order,
    staleness,
)
from streams.wire.errors import MessageError
from streams.wire.messages import (
    MAX_ADAPTER_MESSAGE_BYTES,
    AdapterActivated,
    AdapterRegistered,
    PolicyRecorded,
    ReviewerEvent,
    ReviewLabel,
    ReviewReason,
    ReviewRequest,
    decode,
)
from streams.wire.security import PLAINTEXT, KafkaSecurity
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames

__all__ = ["Rebuilder", "StoreGuard", "marker_key", "read_topics", "rebuild_store"]

log = logging.getLogger(__name__)

FETCH_BYTES = 8 * 1024 * 1024
PROGRESS_EVERY_S = 10.0  # how often a long read of the record says where it is


def marker_key(prefix: str) -> str:
    return f"{prefix}:store:epoch"


def record_topics(topics: TopicNames) -> list[str]:
    """The topics the store is rebuilt from, registries first (they win a tie in time)."""
    return [
        topics.reviewer_events,
        topics.policy_records,
        topics.adapter_registrations,
        topics.adapter_activations,
        topics.review_requests,
        topics.review_labels,
    ]


async def read_topics(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    timeout_s: float = 60.0,
    security: KafkaSecurity = PLAINTEXT,
) -> list[list[Recorded]]:
    """Every record of ``topics`` from the beginning to at least the end they had when reading
    began (whole fetched batches: see below), one list per partition, in ``topics`` order. No
    consumer group: nothing is committed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=FETCH_BYTES,
        request_timeout_ms=int(timeout_s * 1000),
        **security.options(),
    )
    stage, short = "connecting", dict[TopicPartition, tuple[int, int]]()
    try:
        # one limit over every step: none may hang the reader (a collector's rebuild)
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            stage = "reading the topics' metadata"
            parts = await partitions_of(consumer, topics)
            out: dict[TopicPartition, list[Recorded]] = {tp: [] for tp in parts}
            if not parts:
                return []
            consumer.assign(parts)
            stage = "reading the partitions' first and end offsets"
            first = await consumer.beginning_offsets(parts)
            end = await consumer.end_offsets(parts)
            for tp in parts:  # a position set outright: no offset reset for `position` to await
                consumer.seek(tp, first[tp])
            stage = "reading the records"
            said = time.monotonic()
            while short := await _short_of_end(consumer, end):
                if time.monotonic() - said > PROGRESS_EVERY_S:
                    said = time.monotonic()
                    log.info(
                        "reading the record: %d partitions short of their end: %s",
                        len(short),
                        _named(short),
                    )
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    # every record fetched, also past `end`: tansu 0.6.0 answers the end offset
                    # with the base offset of a partition's last record batch, not one past its
                    # last record (330 records produced in a burst: end 157 + 145 of 172 + 158),
                    # so stopping at `end` lost the rest of that batch. A record that arrived
                    # since reading began is replayed too, and stored once like any redelivery.
                    out[tp].extend(
                        Recorded(tp.topic, tp.partition, m.offset, m.timestamp, m.value)
                        for m in messages
                    )
            return [out[tp] for tp in parts]
    except TimeoutError:
        where = f": {_named(short)}" if short else ""
        raise TimeoutError(
            f"the record not read within {timeout_s:.0f}s, stuck {stage}{where}"
        ) from None
    finally:
        await consumer.stop()


async def _short_of_end(
    consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]
) -> dict[TopicPartition, tuple[int, int]]:
    """The partitions whose position is still short of ``end``: (position, end) each."""
    short: dict[TopicPartition, tuple[int, int]] = {}
    for tp, offset in end.items():
        position = await consumer.position(tp)
        if position < offset:
            short[tp] = (position, offset)
    return short


def _named(short: dict[TopicPartition, tuple[int, int]]) -> str:
    """``topic[partition] at position of end`` for the first few short partitions."""
    named = [f"{tp.topic}[{tp.partition}] at {pos} of {end}" for tp, (pos, end) in short.items()]
    return ", ".join(named[:6]) + (f" and {len(named) - 6} more" if len(named) > 6 else "")


class Rebuilder:
    """Replays records into one store through the live store methods (no journal: replaying
    the record does not write to it again). ``bootstrap``: the base's own adapter, registered
    first as every worker does at start. ``admission``: the collector's (`LabelAdmission`),
    applied at each label's own time on the record; ``key_secret``: reviewers' keys."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        topics: TopicNames,
        *,
        scratch: Path,
        bootstrap: AdapterArtifact | None = None,
        admission: Admission,
        key_secret: bytes,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.topics = topics
        self.labels = LabelStore(redis, prefix)
        self.policies = PolicyStore(redis, prefix)
        self.registry = AdapterRegistry(redis, prefix)
        self.keys = ReviewerKeys(redis, prefix, key_secret)
        self.accounts = AccountBook(redis, prefix)
        self.admission = admission
        self._now = 0.0  # the time on the record of the record being replayed
        self.scratch = scratch
        self.bootstrap = bootstrap
        self.counts: Counter[str] = Counter()
        self._registered: set[str] = set()
        self._apply: dict[str, Callable[[bytes | None], Awaitable[str]]] = {
            topics.reviewer_events: self._reviewer,
            topics.policy_records: self._policy,
            topics.adapter_registrations: self._registration,
            topics.adapter_activations: self._activation,
            topics.review_requests: self._request,
            topics.review_labels: self._label,
        }

    async def replay(self, partitions: Sequence[Sequence[Recorded]]) -> Counter[str]:
        """Replay every record by time; return what each did (``kind:outcome`` counts)."""
        if self.bootstrap is not None:
            new = await self.registry.register(self.bootstrap)
            self.counts["adapter:registered" if new else "adapter:present"] += 1
        ordered = replay_order(partitions)
        # a label counts if its reviewer was registered before it, as live: a reviewer is
        # registered from their recorded registration on, or throughout if the store has them
        # without any record (registered before registrations were recorded)
        recorded = self._recorded_reviewers(ordered)
        self._registered = await self.labels.registered() - recorded
        for record in ordered:
            self._now = record.timestamp_ms / 1000
            try:
                outcome = await self._apply[record.topic](record.value)
            except MessageError as exc:  # dead-lettered by the live service too
                outcome = f"skipped_{exc.reason}"
            self.counts[outcome] += 1
        return self.counts

    def _recorded_reviewers(self, records: Sequence[Recorded]) -> set[str]:
        out: set[str] = set()
        for record in records:
            if record.topic == self.topics.reviewer_events:
                try:
                    event = decode(record.value, ReviewerEvent)
                except MessageError:
                    continue
                if event.event == "added":
                    out.update(event.reviewer_ids)
        return out

    async def mark_complete(self, *, now: float) -> StoreMarker:
        marker = StoreMarker(epoch=STORE_EPOCH, at=now, replayed=sum(self.counts.values()))
        await self.redis.set(marker_key(self.prefix), marker.model_dump_json())
        return marker

    async def _reviewer(self, raw: bytes | None) -> str:
        event = decode(raw, ReviewerEvent)
        if event.event == "added":
            self._registered.update(event.reviewer_ids)
            new = await self.labels.register_reviewers(event.reviewer_ids)
            return "reviewers:added" if new else "reviewers:present"
        if event.event == "account" and event.account is not None:
            await self.accounts.put(event.account)
            return "accounts:recorded"
        if event.event == "token_issued" and event.token_sha256 is not None:
            await self.accounts.add_token(event.token_sha256, event.reviewer_ids[0])
            return "accounts:token"
        if event.event == "key_issued":
            if event.key_nonce is None:
                return "reviewers:key_without_nonce"
            await self.keys.issue(event.reviewer_ids[0], nonce=event.key_nonce)
            return "reviewers:key_issued"
        for reviewer_id in event.reviewer_ids:
            await self.labels.clear(reviewer_id)
        return "reviewers:cleared"

    async def _policy(self, raw: bytes | None) -> str:
        recorded = decode(raw, PolicyRecorded)
        history = await self.policies.history()
        if policy_applied(history, recorded.policy_version, recorded.at):
            return "policy:present"
        try:
            policy = Policy.model_validate(recorded.document)
            await self.policies.publish(policy, actor=recorded.actor, now=recorded.at)
        except (PolicyError, ValueError) as exc:
            log.warning("policy %s not replayed: %s", recorded.policy_version, exc)
            return "policy:refused"
        return "policy:published"

    async def _registration(self, raw: bytes | None) -> str:
        message = decode(raw, AdapterRegistered, max_bytes=MAX_ADAPTER_MESSAGE_BYTES)
        files = {MANIFEST_FILE: message.manifest_json.encode(), ADAPTER_FILE: message.file_bytes()}
        try:
            manifest = AdapterManifest.model_validate_json(files[MANIFEST_FILE])
            artifact = AdapterArtifact.from_files(
                files,
                self.scratch / message.adapter_id,
                expected_base=manifest.base_model_version,
            )
            new = await self.registry.register(artifact)
            if message.signature_json is not None:  # workers verify it; kept as recorded
                signature = AdapterSignature.model_validate_json(message.signature_json)
                await self.registry.attach_signature(signature)
        except (ArtifactError, RegistryError, ValueError) as exc:
            log.warning("adapter %s not replayed: %s", message.adapter_id, exc)
            return "adapter:refused"
        if message.signature_json is not None:
            return "adapter:signed"
        return "adapter:registered" if new else "adapter:present"

    async def _activation(self, raw: bytes | None) -> str:
        message = decode(raw, AdapterActivated)
        policy = message.policy_version
        history = await self.registry.history(policy, limit=1_000_000)
        step = activation_step(history, await self.registry.active(policy), message)
        try:
            if step == "rollback":
                await self.registry.rollback(
                    policy, actor=message.actor, reason=message.reason, now=message.at
                )
            elif step == "promote":
                await self.registry.promote(
                    message.adapter_id,
                    actor=message.actor,
                    reason=message.reason,
                    policy=policy,
                    now=message.at,
                )
        except RegistryError as exc:  # e.g. an adapter whose registration is not on the record
            log.warning("adapter change %s not replayed: %s", message.adapter_id, exc)
            return "activation:refused"
        return f"activation:{step}"

    async def _request(self, raw: bytes | None) -> str:
        request = decode(raw, ReviewRequest)
        if request.reason == ReviewReason.SECOND_OPINION:  # the item is recorded already
            await self.labels.record_asked(
                request.item_id, request.request_id, request.policy_version
            )
            return "request:second_opinion"
        item = ReviewedItem(
            item_id=request.item_id,
            text=request.text,
            embedding=None,  # not on the record: the curator's evidence search skips the item
            p_violating=request.probabilities.get("violating", 0.0),
            reason=request.reason.value,
            requested_at=request.requested_at,
            request_id=request.request_id,
            policy_version=request.policy_version,
            audit_drawn=request.audit_drawn,
            audit_rate=request.audit_rate,
        )
        await self.labels.record_requests(request.policy_version, [item])
        return "request:recorded"

    async def _label(self, raw: bytes | None) -> str:
        label = decode(raw, ReviewLabel)
        if label.reviewer_id not in self._registered:
            return "label:unregistered_reviewer"  # dead-lettered by the live collector too
        refused = await self.admission.refusal(label, now=self._now)
        if refused is not None:
            return f"label:{refused.reason}"  # dead-lettered by the live collector too
        outcome = await self.labels.add_label(
            label.policy_version, label.item_id, label.reviewer_id, label.label, label.labeled_at
        )
        return f"label:{outcome}"


async def rebuild_store(
    redis: Redis,
    prefix: str,
    bootstrap_servers: str,
    topics: TopicNames,
    *,
    bootstrap: AdapterArtifact | None = None,
    settings: Settings,
    clock: Callable[[], float] = time.time,
) -> tuple[Counter[str], StoreMarker]:
    """Read the record and replay it into ``redis``; mark the store complete. Returns what was
    done (``kind:outcome`` counts) and the marker written. ``settings``: the label admission's
    (key secret, default policy, skew)."""
    partitions = await read_topics(
        bootstrap_servers, record_topics(topics), security=KafkaSecurity.of(settings.kafka)
    )
    with tempfile.TemporaryDirectory(prefix="borderline-rebuild-") as scratch:
        rebuilder = Rebuilder(
            redis,
            prefix,
            topics,
            scratch=Path(scratch),
            bootstrap=bootstrap,
            admission=LabelAdmission.build(redis, prefix, settings.review, settings.policy),
            key_secret=settings.review.key_secret.get_secret_value().encode(),
        )
        counts = await rebuilder.replay(partitions)
        marker = await rebuilder.mark_complete(now=clock())
    return counts, marker


class StoreGuard:
    """Rebuilds the store when it is not marked complete (see `staleness`): at the start of a
    process and before each batch of labels is stored (one GET when the store is complete)."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        rebuild: Callable[[], Awaitable[object]],
        *,
        epoch: int = STORE_EPOCH,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.rebuild = rebuild
        self.epoch = epoch
        self.rebuilds = 0

    async def ensure(self) -> str | None:
        """Rebuild if the store is incomplete; return why it was rebuilt (None: it was not)."""
        marker = StoreMarker.parse(await self.redis.get(marker_key(self.prefix)))
        reason = staleness(marker, epoch=self.epoch)
        if reason is None:
            return None
        log.warning("rebuilding the store from the record: %s", reason)
        await self.rebuild()
        self.rebuilds += 1
        return reason


def bootstrap_artifact(settings: Settings) -> AdapterArtifact | None:
    """The base's own adapter from the model folder, when there is one (workers register it at
    start; a rebuild registers it first, so a recorded rollback to it can be replayed)."""
    folder = settings.model.dir / BOOTSTRAP_ARTIFACT
    if not folder.is_dir() or not (settings.model.dir / "manifest.json").is_file():
        return None
    base = ModelManifest.read(settings.model.dir, verify=False).model_version
    return AdapterArtifact.load(folder, expected_base=base)


def store_guard(settings: Settings, redis: Redis) -> StoreGuard:
    """The guard a collector holds: rebuilds this deployment's store from its topics."""
    assert settings.kafka.bootstrap_servers
    bootstrap_servers, prefix = settings.kafka.bootstrap_servers, settings.redis.key_prefix

    async def rebuild() -> None:
        await rebuild_store(
            redis,
            prefix,
            bootstrap_servers,
            settings.kafka.topics,
            bootstrap=bootstrap_artifact(settings),
            settings=settings,
        )

    return StoreGuard(redis, prefix, rebuild)
