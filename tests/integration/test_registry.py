"""The adapter registry on the real redis-server: registration is idempotent and never lets one id
name two adapters, promotions and rollbacks keep a history with who did them and why, every
change is announced on the registry's channel, and concurrent promotions from separate clients
are serialised (strictly increasing epochs, no lost update)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from adapters.registry.artifact import ADAPTER_FILE, AdapterArtifact, write_artifact
from adapters.registry.store import ActiveRecord, AdapterRegistry, RegistryError

pytestmark = pytest.mark.integration

BASE = "m-test"


def _artifact(tmp: Path, adapter_id: str, *, created_at: float = 1.0, value: float = 0.5) -> Any:
    return write_artifact(
        tmp / f"{adapter_id}-{value}",
        adapter_id=adapter_id,
        params={"w": np.full((2, 2), value, dtype=np.float32)},
        base_model_version=BASE,
        policy_version="v1",
        labels=["benign", "violating"],
        now=created_at,
    )


def _run(services: Any, body: Callable[[AdapterRegistry, Redis, str], Awaitable[None]]) -> None:
    """Run ``body`` with a registry on a prefix of its own, closing the client afterwards."""
    prefix = f"test-reg-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        redis = Redis.from_url(services.redis_url)
        try:
            await body(AdapterRegistry(redis, prefix), redis, prefix)
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_register_is_idempotent_and_refuses_another_adapter_under_the_same_id(
    services: Any, tmp_path: Path
) -> None:
    first = _artifact(tmp_path, "a", value=0.5)
    other = _artifact(tmp_path, "a", value=0.75)

    async def body(reg: AdapterRegistry, _redis: Redis, _prefix: str) -> None:
        assert await reg.register(first) is True
        assert await reg.register(first) is False
        # the same artifact, read back from disk, is the same adapter
        same = AdapterArtifact.load(first.directory, expected_base=BASE)
        assert await reg.register(same) is False
        with pytest.raises(RegistryError, match="'a' is taken"):
            await reg.register(other)
        # the refused one did not replace the stored bytes
        assert await reg.files("a") == first.files()
        assert [m.adapter_id for m in await reg.adapters()] == ["a"]
        assert await reg.manifest("a") == first.manifest

    _run(services, body)


def test_adapters_are_listed_in_creation_order(services: Any, tmp_path: Path) -> None:
    made = {
        "c": _artifact(tmp_path, "c", created_at=300.0),
        "a": _artifact(tmp_path, "a", created_at=100.0),
        "b": _artifact(tmp_path, "b", created_at=200.0),
    }

    async def body(reg: AdapterRegistry, _redis: Redis, _prefix: str) -> None:
        assert await reg.adapters() == []
        for artifact in made.values():  # registered c, a, b
            await reg.register(artifact)
        listed = await reg.adapters()
        assert [m.adapter_id for m in listed] == ["a", "b", "c"]
        assert [m.created_at for m in listed] == [100.0, 200.0, 300.0]

    _run(services, body)


def test_unknown_adapters_and_nothing_to_roll_back_are_refused(
    services: Any, tmp_path: Path
) -> None:
    async def body(reg: AdapterRegistry, _redis: Redis, _prefix: str) -> None:
        with pytest.raises(RegistryError, match="borderline adapters list") as caught:
            await reg.promote("nope", actor="test", reason="unknown")
        assert "'nope'" in str(caught.value)
        with pytest.raises(RegistryError, match="borderline adapters list"):
            await reg.files("nope")
        with pytest.raises(RegistryError, match="nothing to roll back to for policy v1"):
            await reg.rollback("v1", actor="test", reason="nothing active")
        assert await reg.active("v1") is None
        assert await reg.history("v1") == []
        # one adapter active and no previous one: still nothing to roll back to
        await reg.register(_artifact(tmp_path, "a"))
        await reg.promote("a", actor="test", reason="first")
        with pytest.raises(RegistryError, match="nothing to roll back to"):
            await reg.rollback("v1", actor="test", reason="no previous")
        active = await reg.active("v1")
        assert active is not None and active.adapter_id == "a" and active.epoch == 1

    _run(services, body)


def test_promote_promote_rollback_and_the_history(services: Any, tmp_path: Path) -> None:
    async def body(reg: AdapterRegistry, _redis: Redis, _prefix: str) -> None:
        await reg.register(_artifact(tmp_path, "A", created_at=1.0))
        await reg.register(_artifact(tmp_path, "B", created_at=2.0))
        first = await reg.promote("A", actor="alice", reason="initial", now=10.0)
        second = await reg.promote("B", actor="gate", reason="kappa 0.81", now=20.0)
        rolled = await reg.rollback("v1", actor="bob", reason="false positives", now=30.0)

        assert (first.adapter_id, first.previous, first.action) == ("A", None, "promote")
        assert (second.adapter_id, second.previous, second.action) == ("B", "A", "promote")
        assert (rolled.adapter_id, rolled.previous, rolled.action) == ("A", "B", "rollback")
        assert first.epoch < second.epoch < rolled.epoch
        assert rolled.policy_version == "v1"
        assert await reg.active("v1") == rolled

        history = await reg.history("v1")
        assert history == [rolled, second, first]  # newest first
        assert [(r.actor, r.reason, r.at) for r in history] == [
            ("bob", "false positives", 30.0),
            ("gate", "kappa 0.81", 20.0),
            ("alice", "initial", 10.0),
        ]
        assert await reg.history("v1", limit=1) == [rolled]
        assert await reg.active("v2") is None  # other policies are untouched

    _run(services, body)


def test_every_promotion_is_announced_on_the_channel(services: Any, tmp_path: Path) -> None:
    async def body(reg: AdapterRegistry, redis: Redis, _prefix: str) -> None:
        await reg.register(_artifact(tmp_path, "A"))
        await reg.register(_artifact(tmp_path, "B"))
        pubsub = redis.pubsub()
        await pubsub.subscribe(reg.channel)
        try:
            subscribed = await pubsub.get_message(timeout=5)
            assert subscribed is not None and subscribed["type"] == "subscribe"
            made = [
                await reg.promote("A", actor="test", reason="one"),
                await reg.promote("B", actor="test", reason="two"),
                await reg.rollback("v1", actor="test", reason="three"),
            ]
            received: list[ActiveRecord] = []
            deadline = asyncio.get_running_loop().time() + 5
            while len(received) < len(made) and asyncio.get_running_loop().time() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    assert message["channel"] == reg.channel.encode()
                    json.loads(message["data"])  # a JSON document
                    received.append(ActiveRecord.parse(message["data"]))
            assert received == made
        finally:
            await pubsub.aclose()

    _run(services, body)


def test_concurrent_promotions_from_two_clients_are_serialised(
    services: Any, tmp_path: Path
) -> None:
    async def body(reg: AdapterRegistry, _redis: Redis, prefix: str) -> None:
        await reg.register(_artifact(tmp_path, "A"))
        await reg.register(_artifact(tmp_path, "B"))
        one = Redis.from_url(services.redis_url)
        two = Redis.from_url(services.redis_url)
        try:
            registries = [AdapterRegistry(one, prefix), AdapterRegistry(two, prefix)]
            returned = await asyncio.gather(
                *(
                    registries[i % 2].promote(
                        "AB"[i % 2], actor=f"client-{i % 2}", reason=f"race {i}"
                    )
                    for i in range(20)
                ),
                return_exceptions=True,
            )
        finally:
            await one.aclose()
            await two.aclose()

        # promoting the adapter that is already active is refused, so some of the 20 may be
        made = [r for r in returned if isinstance(r, ActiveRecord)]
        refused = [r for r in returned if not isinstance(r, ActiveRecord)]
        assert all(isinstance(r, RegistryError) and "already active" in str(r) for r in refused)
        n = len(made)
        assert n >= 2
        history = await reg.history("v1", limit=100)
        assert len(history) == n
        by_epoch = {r.epoch: r for r in history}
        assert len(by_epoch) == n, "two promotions got the same epoch"
        assert sorted(by_epoch) == list(range(1, n + 1))
        assert [r.epoch for r in history] == list(range(n, 0, -1))  # newest first
        active = await reg.active("v1")
        assert active == by_epoch[n]
        assert by_epoch[1].previous is None
        for epoch in range(2, n + 1):
            assert by_epoch[epoch].previous == by_epoch[epoch - 1].adapter_id, (
                f"epoch {epoch} did not see epoch {epoch - 1}'s change: a lost update"
            )
            assert by_epoch[epoch].adapter_id != by_epoch[epoch].previous
        # every caller got back the record it made
        assert sorted(made, key=lambda r: r.epoch) == sorted(history, key=lambda r: r.epoch)

    _run(services, body)


def test_stored_bytes_are_the_artifact_bytes(services: Any, tmp_path: Path) -> None:
    artifact = _artifact(tmp_path, "A")

    async def body(reg: AdapterRegistry, redis: Redis, prefix: str) -> None:
        await reg.register(artifact)
        assert await redis.get(f"{prefix}:adapter:A:file") == artifact.files()[ADAPTER_FILE]
        placed = AdapterArtifact.from_files(
            await reg.files("A"), tmp_path / "placed", expected_base=BASE
        )
        assert placed.manifest == artifact.manifest

    _run(services, body)


def test_racing_registrations_of_different_adapters_under_one_id(
    services: Any, tmp_path: Path
) -> None:
    first = _artifact(tmp_path / "1", "same", value=0.5)
    other = _artifact(tmp_path / "2", "same", value=0.75)

    async def body(reg: AdapterRegistry, redis: Redis, prefix: str) -> None:
        second = AdapterRegistry(Redis.from_url(services.redis_url), prefix)
        results = await asyncio.gather(
            reg.register(first), second.register(other), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["RegistryError", "bool"]
        winner = first if results[0] is True else other
        assert await reg.files("same") == winner.files()
        await second.redis.aclose()

    _run(services, body)
