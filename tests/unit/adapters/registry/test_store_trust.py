"""The registry with a trust (the workers' and the trainer's view), on the unit session's real
redis-server: `fetch` places only adapters the trainer signed, and places nothing otherwise; a
rollback goes back to the most recent earlier adapter that verifies, skipping one that does not
(the issue's rollback that pointed the registry at an adapter no worker could load); a forced
promotion says so in its record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.registry.artifact import AdapterArtifact, write_artifact
from adapters.registry.signing import AdapterTrust, SignatureError, sign_adapter
from adapters.registry.store import AdapterRegistry, RegistryError
from models.adapter_file import check_fits, read_adapter_file

BASE = "m-test"
TRAINER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ATTACKER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

Body = Callable[[AdapterRegistry], Awaitable[None]]


def _artifact(tmp: Path, adapter_id: str, value: float = 0.5) -> AdapterArtifact:
    return write_artifact(
        tmp / adapter_id,
        adapter_id=adapter_id,
        params={"w": np.full((2, 2), value, dtype=np.float32)},
        base_model_version=BASE,
        policy_version="v1",
        labels=["benign", "violating"],
        metrics={"kappa": 0.990},
        now=1.0,
    )


async def _register(
    reg: AdapterRegistry, artifact: AdapterArtifact, key: Ed25519PrivateKey | None
) -> None:
    await reg.register(artifact)
    if key is not None:
        gate = {"adapter_id": artifact.adapter_id, "policy_version": "v1", "passed": True}
        await reg.attach_signature(sign_adapter(artifact.files()["adapter.json"], gate, key))


@pytest.fixture
def run(run_redis: Any, prefix: str) -> Callable[[Body], None]:
    trust = AdapterTrust(TRAINER.public_key())

    def go(body: Body) -> None:
        run_redis(lambda redis: body(AdapterRegistry(redis, prefix, trust=trust)))

    return go


def test_fetch_places_only_signed_adapters(run: Callable[[Body], None], tmp_path: Path) -> None:
    async def body(reg: AdapterRegistry) -> None:
        await _register(reg, _artifact(tmp_path, "good"), TRAINER)
        await _register(reg, _artifact(tmp_path, "benign-always", -9.0), None)
        await _register(reg, _artifact(tmp_path, "other-key", -9.0), ATTACKER)
        placed = await reg.fetch("good", tmp_path / "cache" / "good", expected_base=BASE)
        assert placed.path.is_file()
        for adapter_id, reason in (("benign-always", "unsigned"), ("other-key", "wrong_key")):
            with pytest.raises(SignatureError) as refused:
                await reg.fetch(adapter_id, tmp_path / "cache" / adapter_id, expected_base=BASE)
            assert refused.value.reason == reason
            assert not (tmp_path / "cache" / adapter_id).exists()  # nothing placed
        with pytest.raises(RegistryError, match="unknown adapter 'ghost': nothing to sign"):
            gate = {"adapter_id": "ghost", "policy_version": "v1", "passed": True}
            ghost = _artifact(tmp_path, "ghost").files()["adapter.json"]
            await reg.attach_signature(sign_adapter(ghost, gate, TRAINER))

    run(body)


def test_rollback_skips_an_adapter_that_does_not_verify(
    run: Callable[[Body], None], tmp_path: Path
) -> None:
    async def body(reg: AdapterRegistry) -> None:
        await _register(reg, _artifact(tmp_path, "g1"), TRAINER)
        await _register(reg, _artifact(tmp_path, "poisoned", -9.0), None)
        await _register(reg, _artifact(tmp_path, "g2"), TRAINER)
        await reg.promote("g1", actor="trainer", reason="gate", now=1.0)
        forced = await reg.promote("poisoned", actor="mallory", reason="x", now=2.0, forced=True)
        assert forced.forced is True
        gated = await reg.promote("g2", actor="trainer", reason="gate", now=3.0)
        assert gated.forced is False
        rolled = await reg.rollback("v1", actor="ops", reason="g2 misbehaves", now=4.0)
        # the previous one (poisoned) is skipped: the most recent that verifies is g1
        assert (rolled.adapter_id, rolled.previous) == ("g1", "g2")
        assert (await reg.active("v1")) == rolled

    run(body)


def test_rollback_with_nothing_that_verifies_changes_nothing(
    run: Callable[[Body], None], tmp_path: Path
) -> None:
    async def body(reg: AdapterRegistry) -> None:
        await _register(reg, _artifact(tmp_path, "poisoned", -9.0), None)
        await _register(reg, _artifact(tmp_path, "g1"), TRAINER)
        await reg.promote("poisoned", actor="mallory", reason="x", now=1.0, forced=True)
        active = await reg.promote("g1", actor="trainer", reason="gate", now=2.0)
        with pytest.raises(RegistryError, match=r"nothing to roll back to .* not signed"):
            await reg.rollback("v1", actor="ops", reason="back", now=3.0)
        assert await reg.active("v1") == active

    run(body)


def test_rollback_skips_a_signed_adapter_that_does_not_load(
    run_redis: Any, prefix: str, tmp_path: Path
) -> None:
    """Signed and intact is not enough: with a test load (the trainer's: fetch, then load as a
    worker does), a rollback passes over an adapter whose tensors do not fit the base."""

    def body(redis: Any) -> Awaitable[None]:
        async def loads(adapter_id: str) -> None:
            placed = await reg.fetch(
                adapter_id, tmp_path / "cache" / adapter_id, expected_base=BASE
            )
            check_fits(read_adapter_file(placed.path), {"w": (2, 2)})

        reg = AdapterRegistry(redis, prefix, trust=AdapterTrust(TRAINER.public_key()), loads=loads)

        async def go() -> None:
            await _register(reg, _artifact(tmp_path, "g1"), TRAINER)
            misfit = write_artifact(
                tmp_path / "misfit",
                adapter_id="misfit",
                params={"w": np.full((3, 3), 0.5, dtype=np.float32)},
                base_model_version=BASE,
                policy_version="v1",
                labels=["benign", "violating"],
                metrics={"kappa": 0.9},
                now=1.0,
            )
            await _register(reg, misfit, TRAINER)
            await _register(reg, _artifact(tmp_path, "g2"), TRAINER)
            for n, adapter_id in enumerate(("g1", "misfit", "g2")):
                await reg.promote(adapter_id, actor="trainer", reason="gate", now=float(n))
            rolled = await reg.rollback("v1", actor="trainer", reason="g2 worse", now=9.0)
            assert (rolled.adapter_id, rolled.previous) == ("g1", "g2")
            # under another prefix, nothing before g3 but the unloadable one: refused, unchanged
            other = AdapterRegistry(
                redis, f"{prefix}-b", trust=AdapterTrust(TRAINER.public_key()), loads=loads
            )
            await _register(other, misfit, TRAINER)
            await _register(other, _artifact(tmp_path, "g3"), TRAINER)
            await other.promote("misfit", actor="trainer", reason="gate", now=1.0)
            active = await other.promote("g3", actor="trainer", reason="gate", now=2.0)
            with pytest.raises(
                RegistryError,
                match=r"nothing to roll back to .* misfit: adapter tensor w has shape \(3, 3\)",
            ):
                await other.rollback("v1", actor="trainer", reason="x", now=3.0)
            assert await other.active("v1") == active

        return go()

    run_redis(body)
