"""Policy publication on the real redis-server and broker: publishing v1 then v2 makes v2 active
with a history of who published what, a version never names two documents, publishing the same
document again changes nothing, every change is announced on the store's channel, concurrent
publications are serialised, and `borderline policy publish` puts a valid `PolicyUpdate` keyed by
version on the policy topic (again when re-run, so a failed announcement can be repaired)."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from adapters.policy.message import to_message
from adapters.policy.schema import Policy, PolicyError, load_policy, parse_policy
from adapters.policy.store import PolicyStore
from streams.cli.policy import policy_command
from streams.service.reader import read_topic
from streams.wire.messages import PolicyUpdate
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
V1 = load_policy(REPO / "deploy" / "policies" / "v1.yaml")
V2 = load_policy(REPO / "deploy" / "policies" / "v2.yaml")


def _run(services: Any, body: Callable[[PolicyStore, Redis], Awaitable[None]]) -> None:
    """Run ``body`` with a store on a key prefix of its own, closing the client afterwards."""
    prefix = f"test-policy-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        redis = Redis.from_url(services.redis_url)
        try:
            await body(PolicyStore(redis, prefix), redis)
        finally:
            await redis.aclose()

    asyncio.run(main())


async def _next_event(pubsub: PubSub, timeout_s: float = 5.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            event: dict[str, Any] = json.loads(message["data"])
            return event
    raise AssertionError(f"no event on the policy channel within {timeout_s}s")


def test_v2_after_v1_is_active_with_a_history_of_who_and_when(services: Any) -> None:
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

    _run(services, body)


def test_another_document_under_a_published_version_is_refused(services: Any) -> None:
    edited = V1.model_copy(update={"description": "quietly edited"})

    async def body(store: PolicyStore, _redis: Redis) -> None:
        await store.publish(V1, actor="alice", now=1.0)
        with pytest.raises(PolicyError, match="'v1' is already published with another document"):
            await store.publish(edited, actor="mallory", now=2.0)
        assert await store.get("v1") == V1
        assert [r.actor for r in await store.history()] == ["alice"]

    _run(services, body)


def test_publishing_the_same_document_again_is_idempotent(services: Any) -> None:
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

    _run(services, body)


def test_every_change_is_announced_on_the_channel_and_a_no_op_is_not(services: Any) -> None:
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

    _run(services, body)


def test_concurrent_publications_are_serialised(services: Any) -> None:
    policies = [V1.model_copy(update={"version": f"c{i}"}) for i in range(8)]

    async def body(store: PolicyStore, _redis: Redis) -> None:
        clients = [Redis.from_url(services.redis_url) for _ in policies]
        try:
            stores = [PolicyStore(c, store.prefix) for c in clients]
            await asyncio.gather(
                *(
                    s.publish(p, actor=f"a{i}", now=float(i))
                    for i, (s, p) in enumerate(zip(stores, policies, strict=True))
                )
            )
        finally:
            for c in clients:
                await c.aclose()
        history = await store.history()
        assert sorted(r.version for r in history) == sorted(p.version for p in policies)
        # each publication saw the one before it: no lost update
        assert [r.previous for r in history] == [None] + [r.version for r in history[:-1]]
        assert await store.active_version() == history[-1].version

    _run(services, body)


# --- the command ---------------------------------------------------------------------------------


def _settings(services: Any, tag: str) -> Settings:
    topics = TopicNames().prefixed(f"t{tag}.")
    return Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": services.bootstrap_servers,
                "topics": topics.model_dump(),
            },
            "redis": {"url": services.redis_url, "key_prefix": f"test-policy-{tag}"},
        }
    )


def _messages(settings: Settings, count: int) -> list[dict[str, Any]]:
    assert settings.kafka.bootstrap_servers
    return asyncio.run(
        read_topic(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics.policy_updates,
            until=lambda m: len(m) >= count,
            timeout_s=20,
        )
    )


async def _stored(settings: Settings) -> tuple[Policy | None, int]:
    assert settings.redis.url
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    try:
        store = PolicyStore(redis, settings.redis.key_prefix)
        return await store.active(), len(await store.history())
    finally:
        await redis.aclose()


def test_policy_publish_records_and_announces_a_valid_policy_update(
    services: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(services, uuid.uuid4().hex[:8])
    assert settings.kafka.bootstrap_servers
    topic = settings.kafka.topics.policy_updates
    asyncio.run(ensure_topics(settings.kafka.bootstrap_servers, [topic], partitions=2))
    publish = argparse.Namespace(
        action="publish", file=REPO / "deploy" / "policies" / "v2.yaml", actor="alice"
    )

    assert asyncio.run(policy_command(publish, settings)) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert line.startswith("published policy v2 by alice: violating, review band 0.2-0.8")

    [raw] = _messages(settings, 1)
    assert raw.pop("_key") == "v2"
    raw.pop("_partition")
    message = PolicyUpdate.model_validate(raw)
    assert message == PolicyUpdate.model_validate(to_message(V2, now=message.published_at))
    assert len(message.examples) == len(V2.examples)
    assert asyncio.run(_stored(settings)) == (V2, 1)

    # re-running is safe: Redis is unchanged, the announcement is made again
    assert asyncio.run(policy_command(publish, settings)) == 0
    assert "was already active" in capsys.readouterr().out
    again = _messages(settings, 2)
    assert [m["_key"] for m in again] == ["v2", "v2"]
    assert again[0]["_partition"] == again[1]["_partition"]  # keyed by version: one partition
    assert asyncio.run(_stored(settings)) == (V2, 1)

    # show prints the active policy as YAML that publish reads back, its record on top
    show = argparse.Namespace(action="show", version=None)
    assert asyncio.run(policy_command(show, settings)) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# policy v2, active\n# ")
    assert "by alice" in shown.splitlines()[1]
    assert parse_policy(shown, source="shown") == V2

    assert asyncio.run(policy_command(argparse.Namespace(action="history"), settings)) == 0
    [entry] = capsys.readouterr().out.splitlines()
    assert "published" in entry and "v2" in entry and "by alice" in entry


def test_policy_publish_of_an_invalid_file_changes_nothing(
    services: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(services, uuid.uuid4().hex[:8])
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (REPO / "deploy" / "policies" / "v2.yaml").read_text().replace("low: 0.2", "low: 2")
    )
    publish = argparse.Namespace(action="publish", file=bad, actor="alice")
    with pytest.raises(PolicyError, match=r"bad\.yaml: review_band\.low: Input should be less"):
        asyncio.run(policy_command(publish, settings))
    assert asyncio.run(_stored(settings)) == (None, 0)
    show = argparse.Namespace(action="show", version=None)
    assert asyncio.run(policy_command(show, settings)) == 1
    assert "no policy published yet" in capsys.readouterr().out
