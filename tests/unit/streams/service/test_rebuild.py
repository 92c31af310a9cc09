"""Rebuilding the store from the record, on the unit session's redis-server: a live session (the
stores with a `KafkaJournal` over an in-memory producer, labels and requests as the live service
sends them) is replayed into an empty prefix, and the rebuilt store holds exactly what the live
one holds (reviewers, clearances, policy documents and history, adapters, the active adapter
with its history and epochs, labels, review items); replaying again, or over the live store
itself, changes nothing; labels from reviewers not (yet) registered, labels the collector's
admission refuses (unsigned, another policy version) and undecodable records are skipped, while
a label signed with a key rotated afterwards still counts; reviewers' key nonces and second-
opinion requests are restored; `StoreGuard` rebuilds only a store without its marker or with an
older epoch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from adapters.labels.admission import LabelClaim, sign_label
from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.policy.schema import load_policy
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import write_artifact
from adapters.registry.signing import sign_adapter
from adapters.registry.store import AdapterRegistry
from streams.service.admission import LabelAdmission
from streams.service.publication import policy_record
from streams.service.rebuild import Rebuilder, StoreGuard, marker_key
from streams.service.record import KafkaJournal
from streams.service.replay import Recorded, StoreMarker
from streams.wire.messages import ReviewLabel, ReviewReason, ReviewRequest, encode
from streams.wire.settings import PolicySettings
from streams.wire.topics import TopicNames

REPO = Path(__file__).resolve().parents[4]
TOPICS = TopicNames()
V1 = load_policy(REPO / "deploy" / "policies" / "v1.yaml")
V2 = load_policy(REPO / "deploy" / "policies" / "v2.yaml")
SECRET = b"rebuild-test-secret"
TRAINER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@dataclass
class Tape:
    """An in-memory topic log: what a producer sent, stamped by a clock that ticks 1 ms per
    message (the broker's timestamps)."""

    records: dict[str, list[Recorded]] = field(default_factory=dict)
    now_ms: int = 1_700_000_000_000

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> object:
        self.now_ms += 1
        log = self.records.setdefault(topic, [])
        log.append(Recorded(topic, 0, len(log), self.now_ms, value))
        return None

    def clock(self) -> float:
        return (self.now_ms + 1) / 1000

    def partitions(self) -> list[list[Recorded]]:
        order = [
            TOPICS.reviewer_events,
            TOPICS.policy_records,
            TOPICS.adapter_registrations,
            TOPICS.adapter_activations,
            TOPICS.review_requests,
            TOPICS.review_labels,
        ]
        return [self.records.get(t, []) for t in order]


def _label(
    item_id: str,
    reviewer: str,
    label: str,
    at: float,
    *,
    key: bytes | None = None,
    request_id: str | None = None,
    policy: str = "v1",
) -> ReviewLabel:
    claim = LabelClaim(item_id, reviewer, label, policy, request_id, at)
    return ReviewLabel(
        item_id=item_id,
        reviewer_id=reviewer,
        label=label,
        policy_version=policy,
        request_id=request_id,
        labeled_at=at,
        signature=None if key is None else sign_label(key, claim),
    )


async def _live(redis: Redis, prefix: str, tape: Tape, tmp: Path) -> None:
    """A live session: every write through the store the live service uses, recorded."""
    journal = KafkaJournal(tape, TOPICS, actor="ops", clock=tape.clock)
    labels = LabelStore(redis, prefix, journal=journal)
    keys = ReviewerKeys(redis, prefix, SECRET, journal=journal)
    policies = PolicyStore(redis, prefix)
    registry = AdapterRegistry(redis, prefix, journal=journal)
    # a label sent before its reviewer was registered: dead-lettered live, skipped on replay
    await tape.send_and_wait(TOPICS.review_labels, encode(_label("i0", "ann", "benign", 1.0)))
    await labels.register_reviewers(["ann", "bob", "cy"])
    await labels.clear("bob")
    signing = {reviewer: await keys.issue(reviewer) for reviewer in ("ann", "bob", "cy")}
    for policy in (V1, V2, V1):  # v1 reactivated last
        publication = await policies.publish(policy, actor="ops", now=tape.clock())
        recorded = policy_record(policy, publication.record)
        await tape.send_and_wait(TOPICS.policy_records, encode(recorded))
    for adapter_id in ("a1", "a2"):
        artifact = write_artifact(
            tmp / adapter_id,
            adapter_id=adapter_id,
            params={"w": np.full((2, 2), 0.5, dtype=np.float32)},
            base_model_version="m-test",
            policy_version="v1",
            labels=["benign", "violating"],
            now=tape.clock(),
        )
        await registry.register(artifact)
        gate = {"adapter_id": adapter_id, "policy_version": "v1", "passed": True}
        signed = sign_adapter(artifact.files()["adapter.json"], gate, TRAINER)
        await registry.attach_signature(signed)  # the trainer signs: recorded too
        await registry.promote(adapter_id, actor="trainer", reason="gate", now=tape.clock())
    await registry.rollback("v1", actor="ops", reason="live kappa fell", now=tape.clock())
    request = ReviewRequest(
        request_id="rr-1",
        item_id="i1",
        text="buy now",
        reason=ReviewReason.UNCERTAIN,
        probabilities={"violating": 0.5},
        policy_version="v1",
        priority=0.5,
        requested_at=tape.clock(),
    )
    await tape.send_and_wait(TOPICS.review_requests, encode(request))
    item = ReviewedItem(
        "i1", "buy now", None, 0.5, "uncertain", request.requested_at, request_id="rr-1"
    )
    await labels.record_requests("v1", [item])
    for reviewer, value in (("ann", "violating"), ("bob", "violating"), ("cy", "benign")):
        label = _label(
            "i1", reviewer, value, tape.clock(), key=signing[reviewer], request_id="rr-1"
        )
        await tape.send_and_wait(TOPICS.review_labels, encode(label))
        await labels.add_label("v1", "i1", reviewer, value, label.labeled_at)
    await keys.issue("cy")  # rotated after cy's label: the label still counts on replay
    # a second opinion the collector sent (recorded as asked before it was sent)
    second = request.model_copy(
        update={"request_id": "rr-2", "reason": ReviewReason.SECOND_OPINION}
    )
    await labels.record_asked("i1", "rr-2", "v1")
    await tape.send_and_wait(TOPICS.review_requests, encode(second))
    # refused by the live collector: unsigned, and under a forged policy version
    forged = [
        _label("i1", "ann", "benign", tape.clock(), request_id="rr-1"),
        _label(
            "i1",
            "bob",
            "benign",
            tape.clock(),
            key=signing["bob"],
            request_id="rr-1",
            policy="v999",
        ),
    ]
    for label in forged:
        await tape.send_and_wait(TOPICS.review_labels, encode(label))
    await tape.send_and_wait(TOPICS.review_labels, b"{not json")
    await tape.send_and_wait(TOPICS.review_labels, encode(_label("i2", "mallory", "benign", 9.0)))


async def snapshot(redis: Redis, prefix: str) -> dict[str, Any]:
    """Every key of ``prefix`` (without it) with its value, by type; the marker left out."""
    out: dict[str, Any] = {}
    async for raw in redis.scan_iter(match=f"{prefix}:*"):
        key = raw.decode()
        if key == marker_key(prefix):
            continue
        kind = (await redis.type(key)).decode()
        value: Any
        if kind == "string":
            value = await redis.get(key)
        elif kind == "set":
            value = sorted(await redis.smembers(key))
        elif kind == "hash":
            value = dict(sorted((await redis.hgetall(key)).items()))
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        else:
            assert kind == "zset", kind
            value = await redis.zrange(key, 0, -1, withscores=True)
        out[key.removeprefix(prefix)] = value
    return out


def _rebuilder(redis: Redis, prefix: str, tmp: Path) -> Rebuilder:
    keys = ReviewerKeys(redis, prefix, SECRET)
    admission = LabelAdmission(
        LabelStore(redis, prefix),
        keys,
        PolicyStore(redis, prefix),
        PolicySettings(),
        max_skew_s=300.0,
    )
    return Rebuilder(
        redis, prefix, TOPICS, scratch=tmp / "scratch", admission=admission, key_secret=SECRET
    )


@dataclass
class World:
    live: dict[str, Any]
    rebuilt: dict[str, Any]
    again: dict[str, Any]
    over_live: dict[str, Any]
    counts: dict[str, int]
    counts_again: dict[str, int]
    marker: StoreMarker | None


def _world(run_redis: Any, prefix: str, tmp: Path) -> World:
    async def body(redis: Redis) -> World:
        tape = Tape()
        await _live(redis, prefix, tape, tmp)
        live = await snapshot(redis, prefix)
        fresh = prefix + "-rebuilt"
        first = _rebuilder(redis, fresh, tmp)
        counts = dict(await first.replay(tape.partitions()))
        await first.mark_complete(now=1.0)
        rebuilt = await snapshot(redis, fresh)
        second = _rebuilder(redis, fresh, tmp)
        counts_again = dict(await second.replay(tape.partitions()))
        again = await snapshot(redis, fresh)
        await _rebuilder(redis, prefix, tmp).replay(tape.partitions())
        over_live = await snapshot(redis, prefix)
        marker = StoreMarker.parse(await redis.get(marker_key(fresh)))
        return World(live, rebuilt, again, over_live, counts, counts_again, marker)

    result: World = run_redis(body)
    return result


def test_a_rebuilt_store_holds_exactly_what_the_live_store_held(
    run_redis: Any, prefix: str, tmp_path: Path
) -> None:
    w = _world(run_redis, prefix, tmp_path)
    assert w.rebuilt == w.live
    assert w.marker is not None and w.marker.epoch >= 1
    # what the rebuilt store holds, read back through the stores
    assert {k for k in w.live if k.startswith(":adapter:")} >= {
        ":adapter:a1:file",
        ":adapter:a2:file",
        ":adapter:epoch",
        ":adapter:a1:signature",
    }
    active = json.loads(w.rebuilt[":adapter:active:v1"])
    assert (active["adapter_id"], active["action"], active["epoch"]) == ("a1", "rollback", 3)
    assert w.rebuilt[":policy:active"] == b"v1"
    assert [json.loads(r)["action"] for r in w.rebuilt[":policy:history"]] == [
        "published",
        "published",
        "reactivated",
    ]
    assert sorted(w.rebuilt[":labels:v1:i1"]) == [b"ann", b"bob", b"cy"]
    assert w.rebuilt[":reviewers:cleared"] == [b"bob"]
    assert sorted(w.rebuilt[":reviewers:keys"]) == [b"ann", b"bob", b"cy"]  # nonces, not keys
    assert w.rebuilt[":review:asked:i1"] == {b"rr-1": b"v1", b"rr-2": b"v1"}


def test_a_second_replay_and_a_replay_over_the_live_store_change_nothing(
    run_redis: Any, prefix: str, tmp_path: Path
) -> None:
    w = _world(run_redis, prefix, tmp_path)
    assert w.again == w.rebuilt
    assert w.over_live == w.live
    assert w.counts_again["activation:applied"] == 3
    assert w.counts_again["policy:present"] == 3
    assert w.counts_again["label:duplicate"] == 3
    assert "label:stored" not in w.counts_again


def test_what_the_live_collector_refused_is_skipped(
    run_redis: Any, prefix: str, tmp_path: Path
) -> None:
    counts = _world(run_redis, prefix, tmp_path).counts
    # i0 by ann before ann was registered, i2 by mallory who never was
    assert counts["label:unregistered_reviewer"] == 2
    assert counts["skipped_invalid_json"] == 1
    assert counts["label:stored"] == 3
    assert counts["label:unsigned_label"] == 1
    assert counts["label:policy_mismatch"] == 1
    assert counts["reviewers:key_issued"] == 4
    assert counts["request:second_opinion"] == 1
    assert counts["activation:rollback"] == 1
    assert counts["activation:promote"] == 2
    assert counts["adapter:signed"] == 2


def test_a_policy_record_under_a_version_taken_by_another_document_is_refused(
    run_redis: Any, prefix: str, tmp_path: Path
) -> None:
    forged = policy_record(V1, _record_at(5.0)).model_copy(
        update={"document": {**json.loads(V2.canonical_json()), "version": "v1"}}
    )
    records = [
        Recorded(TOPICS.policy_records, 0, 0, 1, encode(policy_record(V1, _record_at(5.0)))),
        Recorded(TOPICS.policy_records, 0, 1, 2, encode(forged.model_copy(update={"at": 6.0}))),
    ]

    async def body(redis: Redis) -> tuple[dict[str, int], str]:
        counts = await _rebuilder(redis, prefix, tmp_path).replay([records])
        active = await PolicyStore(redis, prefix).active()
        assert active is not None
        return dict(counts), active.sha256()

    counts, active_sha = run_redis(body)
    assert counts == {"policy:published": 1, "policy:refused": 1}
    assert active_sha == V1.sha256()


def _record_at(at: float) -> Any:
    from adapters.policy.store import PolicyRecord

    return PolicyRecord(version="v1", action="published", actor="ops", at=at, sha256=V1.sha256())


# --- the guard ---------------------------------------------------------------------------------


def _guard_runs(run_redis: Any, prefix: str, marker: str | None) -> Iterator[str | None]:
    rebuilds: list[int] = []

    async def body(redis: Redis) -> list[str | None]:
        if marker is not None:
            await redis.set(marker_key(prefix), marker)

        async def rebuild() -> None:
            rebuilds.append(1)
            await redis.set(marker_key(prefix), StoreMarker(epoch=1, at=2.0).model_dump_json())

        guard = StoreGuard(redis, prefix, rebuild, epoch=1)
        return [await guard.ensure(), await guard.ensure()]

    reasons: list[str | None] = run_redis(body)
    assert len(rebuilds) == sum(r is not None for r in reasons)
    return iter(reasons)


def test_the_guard_rebuilds_a_store_without_a_marker_once(run_redis: Any, prefix: str) -> None:
    first, second = _guard_runs(run_redis, prefix, None)
    assert first is not None and "no epoch marker" in first
    assert second is None


def test_the_guard_rebuilds_an_older_or_unreadable_store(run_redis: Any, prefix: str) -> None:
    first, second = _guard_runs(run_redis, prefix, StoreMarker(epoch=0, at=1.0).model_dump_json())
    assert first == "store epoch 0 is older than 1"
    assert second is None
    first, _ = _guard_runs(run_redis, prefix + "x", "not json")
    assert first is not None and "no epoch marker" in first


def test_the_guard_leaves_a_complete_store_alone(run_redis: Any, prefix: str) -> None:
    assert list(_guard_runs(run_redis, prefix, StoreMarker(epoch=1, at=1.0).model_dump_json())) == [
        None,
        None,
    ]
