"""The adapter registry on a real redis-server (the unit session's own, on a unix socket):
registration is idempotent and never lets one id name two adapters, promotions and rollbacks keep
a history with who did them and why, every change is announced on the registry's channel,
concurrent promotions from separate clients are serialised (strictly increasing epochs, no lost
update), and `fetch` places only verified adapters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from adapters.registry.artifact import (
    ADAPTER_FILE,
    MANIFEST_FILE,
    AdapterArtifact,
    ArtifactError,
    write_artifact,
)
from adapters.registry.store import ActiveRecord, AdapterRegistry, RegistryError
from tests.redis_support import redis_client

BASE = "m-test"

Body = Callable[[AdapterRegistry, Redis, str], Awaitable[None]]


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


@pytest.fixture
def run(run_redis: Any, prefix: str) -> Callable[[Body], None]:
    """``run(body)``: ``body(registry, client, prefix)`` on a key prefix of this test's own."""

    def go(body: Body) -> None:
        run_redis(lambda redis: body(AdapterRegistry(redis, prefix), redis, prefix))

    return go


def test_register_is_idempotent_and_refuses_another_adapter_under_the_same_id(
    run: Callable[[Body], None], tmp_path: Path
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

    run(body)


def test_adapters_are_listed_in_creation_order(run: Callable[[Body], None], tmp_path: Path) -> None:
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

    run(body)


def test_unknown_adapters_and_nothing_to_roll_back_are_refused(
    run: Callable[[Body], None], tmp_path: Path
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

    run(body)


def test_promote_promote_rollback_and_the_history(
    run: Callable[[Body], None], tmp_path: Path
) -> None:
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

    run(body)


def test_every_promotion_is_announced_on_the_channel(
    run: Callable[[Body], None], tmp_path: Path
) -> None:
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

    run(body)


def test_concurrent_promotions_from_two_clients_are_serialised(
    run: Callable[[Body], None], redis_url: str, tmp_path: Path
) -> None:
    async def body(reg: AdapterRegistry, _redis: Redis, prefix: str) -> None:
        await reg.register(_artifact(tmp_path, "A"))
        await reg.register(_artifact(tmp_path, "B"))
        async with redis_client(redis_url) as one, redis_client(redis_url) as two:
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

    run(body)


def test_stored_bytes_are_the_artifact_bytes(run: Callable[[Body], None], tmp_path: Path) -> None:
    artifact = _artifact(tmp_path, "A")

    async def body(reg: AdapterRegistry, redis: Redis, prefix: str) -> None:
        await reg.register(artifact)
        assert await redis.get(f"{prefix}:adapter:A:file") == artifact.files()[ADAPTER_FILE]
        placed = AdapterArtifact.from_files(
            await reg.files("A"), tmp_path / "placed", expected_base=BASE
        )
        assert placed.manifest == artifact.manifest

    run(body)


def test_racing_registrations_of_different_adapters_under_one_id(
    run: Callable[[Body], None], redis_url: str, tmp_path: Path
) -> None:
    first = _artifact(tmp_path / "1", "same", value=0.5)
    other = _artifact(tmp_path / "2", "same", value=0.75)

    async def body(reg: AdapterRegistry, redis: Redis, prefix: str) -> None:
        async with redis_client(redis_url) as client:
            second = AdapterRegistry(client, prefix)
            results = await asyncio.gather(
                reg.register(first), second.register(other), return_exceptions=True
            )
        assert sorted(type(r).__name__ for r in results) == ["RegistryError", "bool"]
        winner = first if results[0] is True else other
        assert await reg.files("same") == winner.files()

    run(body)


def test_fetch_places_a_verified_adapter_and_refuses_a_tampered_or_foreign_one(
    run: Callable[[Body], None], tmp_path: Path
) -> None:
    good = _artifact(tmp_path, "good")
    bad = _artifact(tmp_path, "bad", value=0.25)

    async def body(reg: AdapterRegistry, redis: Redis, prefix: str) -> None:
        await reg.register(good)
        await reg.register(bad)
        placed = await reg.fetch("good", tmp_path / "cache" / "good", expected_base=BASE)
        assert placed.adapter_id == "good" and placed.manifest == good.manifest
        assert (tmp_path / "cache" / "good" / ADAPTER_FILE).read_bytes() == good.path.read_bytes()
        assert (tmp_path / "cache" / "good" / MANIFEST_FILE).is_file()

        with pytest.raises(ArtifactError, match="built for base m-test, this worker runs m-other"):
            await reg.fetch("good", tmp_path / "cache" / "foreign", expected_base="m-other")
        assert not (tmp_path / "cache" / "foreign").exists()

        key = f"{prefix}:adapter:bad:file"  # the documented key of the adapter's bytes
        stored = await redis.get(key)
        assert isinstance(stored, bytes)
        await redis.set(key, stored[:-1] + bytes([stored[-1] ^ 0x01]))
        with pytest.raises(ArtifactError, match=r"sha256 .* corrupted or tampered with"):
            await reg.fetch("bad", tmp_path / "cache" / "bad", expected_base=BASE)
        assert not (tmp_path / "cache" / "bad").exists()

        with pytest.raises(RegistryError, match="unknown adapter 'nope'"):
            await reg.fetch("nope", tmp_path / "cache" / "nope", expected_base=BASE)
        with pytest.raises(RegistryError, match="unknown adapter 'nope'"):
            await reg.manifest("nope")

    run(body)


def test_promoting_the_active_adapter_again_is_refused_and_changes_nothing(
    run: Callable[[Body], None], tmp_path: Path
) -> None:
    async def body(reg: AdapterRegistry, _redis: Redis, _prefix: str) -> None:
        await reg.register(_artifact(tmp_path, "A"))
        first = await reg.promote("A", actor="alice", reason="first", now=1.0)
        with pytest.raises(RegistryError, match="'A' is already active for policy v1"):
            await reg.promote("A", actor="bob", reason="again", now=2.0)
        assert await reg.active("v1") == first
        assert await reg.history("v1") == [first]

    run(body)


def test_a_promotion_under_another_policy_and_rollbacks_that_alternate(
    run: Callable[[Body], None], tmp_path: Path
) -> None:
    async def body(reg: AdapterRegistry, _redis: Redis, _prefix: str) -> None:
        await reg.register(_artifact(tmp_path, "A"))
        await reg.register(_artifact(tmp_path, "B"))
        # an adapter made for v1 may serve v2 when asked to; v1 is untouched
        moved = await reg.promote("A", actor="ops", reason="reuse", policy="v2", now=5.0)
        assert moved.policy_version == "v2" and moved.previous is None
        assert await reg.active("v1") is None
        await reg.promote("B", actor="ops", reason="next", policy="v2", now=6.0)
        back = await reg.rollback("v2", actor="ops", reason="back", now=7.0)
        # a rollback's previous is the adapter it replaced: rolling back again returns to it
        forth = await reg.rollback("v2", actor="ops", reason="forth", now=8.0)
        assert [(r.adapter_id, r.previous) for r in (back, forth)] == [("A", "B"), ("B", "A")]
        assert [r.epoch for r in await reg.history("v2")] == [4, 3, 2, 1]
        assert await reg.history("v2", limit=0) == []

    run(body)


def test_an_active_record_reads_an_empty_previous_as_none() -> None:
    doc = {
        "adapter_id": "A",
        "previous": "",
        "epoch": "3",
        "action": "promote",
        "actor": "ops",
        "reason": "r",
        "at": 1,
        "policy_version": "v1",
    }
    record = ActiveRecord.parse(json.dumps(doc))
    assert (record.previous, record.epoch, record.at) == (None, 3, 1.0)
