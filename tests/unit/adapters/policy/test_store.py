"""The policy store on a real redis-server (the unit session's own, on a unix socket):
publishing v1 then v2 makes v2 active with a history of who published what, a version never names
two documents, publishing the same document again changes nothing, every change is announced on
the store's channel, concurrent publications are serialised, and a stored record that does not
parse is refused by name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from adapters.policy.schema import PolicyError, load_policy, parse_policy
from adapters.policy.store import PolicyRecord, PolicyStore
from tests.redis_support import redis_client

REPO = Path(__file__).resolve().parents[4]
V1 = load_policy(REPO / "deploy" / "policies" / "v1.yaml")
V2 = load_policy(REPO / "deploy" / "policies" / "v2.yaml")

Body = Callable[[PolicyStore, Redis], Awaitable[None]]


@pytest.fixture
def run(run_redis: Any, prefix: str) -> Callable[[Body], None]:
    """``run(body)``: ``body(store, client)`` with a store on a key prefix of this test's own."""

    def go(body: Body) -> None:
        run_redis(lambda redis: body(PolicyStore(redis, prefix), redis))

    return go


async def _next_event(pubsub: PubSub, timeout_s: float = 5.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            event: dict[str, Any] = json.loads(message["data"])
            return event
    raise AssertionError(f"no event on the policy channel within {timeout_s}s")


def test_v2_after_v1_is_active_with_a_history_of_who_and_when(run: Callable[[Body], None]) -> None:
    async def body(store: PolicyStore, _redis: Redis) -> None:
        assert await store.active() is None
        assert await store.history() == []
        first = await store.publish(V1, actor="alice", now=1000.0)
        second = await store.publish(V2, actor="bob", now=2000.0)
        assert first.changed and second.changed
        assert await store.active() == V2
        assert await store.active_version() == "v2"
        assert await store.get("v1") == V1  # the superseded document stays readable
        history = await store.history()
        assert [(r.version, r.previous, r.action, r.actor, r.at) for r in history] == [
            ("v1", None, "published", "alice", 1000.0),
            ("v2", "v1", "published", "bob", 2000.0),
        ]
        assert history == [first.record, second.record]
        assert history[1].sha256 == V2.sha256()
        assert await store.record("v1") == first.record
        with pytest.raises(PolicyError, match="unknown policy version 'v9'"):
            await store.get("v9")

    run(body)


def test_another_document_under_a_published_version_is_refused(run: Callable[[Body], None]) -> None:
    edited = V1.model_copy(update={"description": "quietly edited"})

    async def body(store: PolicyStore, _redis: Redis) -> None:
        await store.publish(V1, actor="alice", now=1.0)
        with pytest.raises(PolicyError, match="'v1' is already published with another document"):
            await store.publish(edited, actor="mallory", now=2.0)
        assert await store.get("v1") == V1
        assert [r.actor for r in await store.history()] == ["alice"]

    run(body)


def test_publishing_the_same_document_again_is_idempotent(run: Callable[[Body], None]) -> None:
    # the same policy, written differently, is the same document
    relaid = parse_policy(
        json.dumps(V1.model_dump(mode="json", exclude_none=True), indent=1), source="relaid"
    )

    async def body(store: PolicyStore, _redis: Redis) -> None:
        first = await store.publish(V1, actor="alice", now=1.0)
        again = await store.publish(relaid, actor="bob", now=2.0)
        assert not again.changed
        assert again.record == first.record  # still alice's publication
        assert len(await store.history()) == 1
        # an older version published again becomes active again: a recorded policy rollback
        await store.publish(V2, actor="alice", now=3.0)
        back = await store.publish(V1, actor="carol", now=4.0)
        assert back.changed
        assert (back.record.action, back.record.previous, back.record.actor) == (
            "reactivated",
            "v2",
            "carol",
        )
        assert await store.active_version() == "v1"
        assert [r.version for r in await store.history()] == ["v1", "v2", "v1"]

    run(body)


def test_every_change_is_announced_on_the_channel_and_a_no_op_is_not(
    run: Callable[[Body], None],
) -> None:
    async def body(store: PolicyStore, redis: Redis) -> None:
        pubsub = redis.pubsub()
        await pubsub.subscribe(store.channel)
        try:
            await store.publish(V1, actor="alice", now=1.0)
            event = await _next_event(pubsub)
            assert (event["version"], event["actor"], event["action"]) == (
                "v1",
                "alice",
                "published",
            )
            await store.publish(V1, actor="alice", now=2.0)  # no change: no event
            await store.publish(V2, actor="bob", now=3.0)
            event = await _next_event(pubsub)
            assert (event["version"], event["previous"], event["actor"]) == ("v2", "v1", "bob")
            assert event["sha256"] == V2.sha256()
        finally:
            await pubsub.aclose()

    run(body)


def test_concurrent_publications_are_serialised(
    run: Callable[[Body], None], redis_url: str
) -> None:
    policies = [V1.model_copy(update={"version": f"c{i}"}) for i in range(8)]

    async def publish(store: PolicyStore, i: int) -> None:
        async with redis_client(redis_url) as client:  # a client, and a connection, of its own
            await PolicyStore(client, store.prefix).publish(policies[i], actor=f"a{i}", now=i)

    async def body(store: PolicyStore, _redis: Redis) -> None:
        await asyncio.gather(*(publish(store, i) for i in range(len(policies))))
        history = await store.history()
        assert sorted(r.version for r in history) == sorted(p.version for p in policies)
        # each publication saw the one before it: no lost update
        assert [r.previous for r in history] == [None] + [r.version for r in history[:-1]]
        assert await store.active_version() == history[-1].version

    run(body)


def test_a_stored_record_that_does_not_parse_is_refused_by_name(
    run: Callable[[Body], None], prefix: str
) -> None:
    async def body(store: PolicyStore, redis: Redis) -> None:
        await store.publish(V1, actor="alice", now=1.0)
        # the documented history key: a record written by something else, with an unknown action
        bad = {"version": "v9", "action": "deleted", "actor": "x", "at": 2.0, "sha256": "0"}
        await redis.rpush(f"{prefix}:policy:history", json.dumps(bad))
        with pytest.raises(PolicyError, match="action"):
            await store.history()

    run(body)


def test_a_record_round_trips_through_its_json() -> None:
    record = PolicyRecord.parse(
        json.dumps(
            {
                "version": "v2",
                "previous": "",
                "action": "published",
                "actor": "bob",
                "at": 5,
                "sha256": "ab",
            }
        )
    )
    assert record.previous is None and record.at == 5.0
    assert PolicyRecord.parse(record.to_json()) == record
    assert json.loads(record.to_json()) == {
        "version": "v2",
        "previous": None,
        "action": "published",
        "actor": "bob",
        "at": 5.0,
        "sha256": "ab",
    }


def test_record_of_a_version_never_published_is_none(run: Callable[[Body], None]) -> None:
    async def body(store: PolicyStore, _redis: Redis) -> None:
        assert await store.record("v1") is None
        await store.publish(V1, actor="alice", now=1.0)
        await store.publish(V2, actor="bob", now=2.0)
        await store.publish(V1, actor="carol", now=3.0)
        latest = await store.record("v1")
        assert latest is not None and (latest.actor, latest.action) == ("carol", "reactivated")
        assert await store.record("v3") is None

    run(body)
