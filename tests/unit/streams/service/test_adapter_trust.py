"""Only gated, signed adapters serve (issue 14, item 2), attacked the way the issue did, through a
worker's real swap path (`ControlPlane.sync` over the real `AdapterRegistry` on the unit session's
redis-server, with the worker's `AdapterTrust`), the trainer's signing hook (`SigningVerdicts`) and
the CLI's promotion by hand (`promote_by_hand`):

- an adapter biased to always-benign, with a recomputed sha256 and a made-up kappa of 0.990,
  registered and promoted by hand, is refused unsigned, and signed with another key; the worker
  keeps serving the previous one, the refusal is counted by reason, and the registry/worker
  mismatch gauge says so;
- a promotion by hand without a passed gate report is refused; forced, it is in the audit log
  with actor and reason, and the forced gauge moves;
- a rollback skips an adapter that does not verify and goes to the last signed one;
- the trainer signs only a report that passed, before it is recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from adapters.adapt.verdicts import GateRecord, VerdictStore
from adapters.policy.schema import Policy
from adapters.registry.artifact import AdapterArtifact, write_artifact
from adapters.registry.audit import AuditLog
from adapters.registry.signing import AdapterTrust, sign_adapter
from adapters.registry.store import AdapterRegistry, RegistryError
from adapters.review.routing import RoutingPolicy
from streams.cli.adapters import promote_by_hand
from streams.service.control import ControlPlane
from streams.service.metrics import Metrics
from streams.service.serving import ServingState
from streams.service.trust import SigningVerdicts, signing_verdicts

BASE = "m-test"
TRAINER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ATTACKER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _artifact(tmp: Path, adapter_id: str, value: float = 0.5) -> AdapterArtifact:
    return write_artifact(
        tmp / "made" / adapter_id,
        adapter_id=adapter_id,
        params={"w": np.full((2, 2), value, dtype=np.float32)},
        base_model_version=BASE,
        policy_version="v1",
        labels=["benign", "violating"],
        metrics={"kappa": 0.990},  # made up
        now=1.0,
    )


def _gate(adapter_id: str, passed: bool = True) -> GateRecord:
    return GateRecord(
        adapter_id=adapter_id,
        policy_version="v1",
        passed=passed,
        reason="kappa 0.81 >= 0.72" if passed else "kappa 0.41 < 0.72",
        candidate_kappa=0.81 if passed else 0.41,
    )


@dataclass
class NoPolicy:
    """`PolicyStore` with nothing published (the configured v1 serves)."""

    channel: str = "t:policy:events"

    async def active(self) -> Policy | None:
        return None


@dataclass
class FakeModel:
    """The scorer's adapter slots: loads whatever the registry placed."""

    model_version: str = BASE
    loaded_adapters: list[str] = field(default_factory=lambda: ["boot"])

    def load_adapter(self, adapter_id: str, path: Path) -> None:
        assert path.is_file()
        self.loaded_adapters.append(adapter_id)


BOOT = ServingState(RoutingPolicy("v1"), "boot")


@dataclass
class FakeServing:
    state: ServingState = BOOT

    def apply(self, state: ServingState) -> None:
        self.state = state


@dataclass
class World:
    registry: AdapterRegistry
    redis: Redis
    control: ControlPlane
    serving: FakeServing
    metrics: Metrics
    tmp: Path

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def trainer_made(self, adapter_id: str, passed: bool = True) -> None:
        """What the trainer does: register, judge, record the report (signed when it passed)."""
        await self.registry.register(_artifact(self.tmp, adapter_id))
        verdicts = VerdictStore(self.redis, self.registry.prefix)
        await signing_verdicts(verdicts, self.registry, TRAINER).record(_gate(adapter_id, passed))


Body = Callable[[World], Awaitable[None]]


@pytest.fixture
def run(run_redis: Any, prefix: str, tmp_path: Path) -> Callable[[Body], None]:
    def go(body: Body) -> None:
        async def main(redis: Redis) -> None:
            registry = AdapterRegistry(redis, prefix, trust=AdapterTrust(TRAINER.public_key()))
            serving, metrics = FakeServing(), Metrics()
            control = ControlPlane(
                policies=NoPolicy(),
                registry=registry,
                redis=redis,
                model=FakeModel(),
                serving=serving,
                cache_dir=tmp_path / "cache",
                metrics=metrics,
                worker="w1",
            )
            await body(World(registry, redis, control, serving, metrics, tmp_path))

        run_redis(main)

    return go


def test_the_always_benign_adapter_promoted_by_hand_is_refused_and_counted(
    run: Callable[[Body], None],
) -> None:
    async def body(w: World) -> None:
        await w.trainer_made("g1")
        await w.registry.promote("g1", actor="borderline trainer", reason="gate passed")
        assert await w.control.sync() is True
        assert w.serving.state.adapter_id == "g1"
        assert w.sample("borderline_adapter_mismatch") == 0

        # the attack: well-formed, sha256 recomputed, kappa 0.990 in its manifest, unsigned
        forged = _artifact(w.tmp, "always-benign", value=-9.0)
        await w.registry.register(forged)
        await w.registry.promote("always-benign", actor="mallory", reason="looks great")
        assert await w.control.sync() is False
        assert w.serving.state.adapter_id == "g1"  # keeps serving the previous one
        assert w.sample("borderline_adapter_signature_refusals_total", reason="unsigned") == 1
        assert w.sample("borderline_adapter_swaps_total", result="refused") == 1
        assert w.sample("borderline_adapter_mismatch") == 1
        assert not (w.tmp / "cache" / "always-benign").exists()
        await w.control.sync()  # not tried again, not counted again
        assert w.sample("borderline_adapter_signature_refusals_total", reason="unsigned") == 1

        # the same, signed with a key of the attacker's own
        await w.registry.register(_artifact(w.tmp, "benign-signed", value=-9.0))
        gate = _gate("benign-signed").model_dump(mode="json")
        files = await w.registry.files("benign-signed")
        await w.registry.attach_signature(sign_adapter(files["adapter.json"], gate, ATTACKER))
        await w.registry.promote("benign-signed", actor="mallory", reason="signed now")
        await w.control.sync()
        assert w.serving.state.adapter_id == "g1"
        assert w.sample("borderline_adapter_signature_refusals_total", reason="wrong_key") == 1

        # a rollback skips the unsigned one and goes back to g1: registry and worker agree again
        rolled = await w.registry.rollback("v1", actor="ops", reason="poisoned")
        assert rolled.adapter_id == "g1"
        await w.control.sync()
        assert w.serving.state.adapter_id == "g1"
        assert w.sample("borderline_adapter_mismatch") == 0

    run(body)


def test_promotion_by_hand_needs_a_passed_gate_report_or_force_with_a_reason(
    run: Callable[[Body], None],
) -> None:
    async def body(w: World) -> None:
        await w.trainer_made("g1")
        await w.trainer_made("failed", passed=False)
        await w.registry.register(_artifact(w.tmp, "always-benign", value=-9.0))
        promote = lambda adapter_id, **kw: promote_by_hand(  # noqa: E731
            w.registry,
            default_policy="v1",
            adapter_id=adapter_id,
            actor=kw.pop("actor", "mallory@laptop"),
            now=5.0,
            **kw,
        )
        for adapter_id, said in (("always-benign", "no gate report"), ("failed", "failed: ")):
            with pytest.raises(RegistryError, match=f"no passed gate report .*{said}"):
                await promote(adapter_id, reason=None, force=False)
        with pytest.raises(RegistryError, match="--force needs --reason"):
            await promote("always-benign", reason=None, force=True)
        assert await w.registry.active("v1") is None  # nothing changed
        assert await AuditLog(w.redis, w.registry.prefix).count() == 0

        gated = await promote("g1", reason=None, force=False, actor="alice")
        assert (gated.adapter_id, gated.forced) == ("g1", False)
        await w.control.sync()
        assert w.sample("borderline_adapter_forced") == 0

        forced = await promote("always-benign", reason="incident 42", force=True)
        assert forced.forced is True
        (entry,) = await AuditLog(w.redis, w.registry.prefix).entries()
        assert (entry.actor, entry.reason, entry.adapter_id, entry.action) == (
            "mallory@laptop",
            "incident 42",
            "always-benign",
            "force-promote",
        )
        assert entry.gate == "no gate report"
        await w.control.sync()
        assert w.sample("borderline_adapter_forced") == 1  # the alert's metric moves
        assert w.serving.state.adapter_id == "g1"  # and the unsigned adapter still does not serve

    run(body)


def test_the_trainer_signs_only_what_passed_before_recording_it(
    run: Callable[[Body], None],
) -> None:
    async def body(w: World) -> None:
        await w.trainer_made("g1")
        await w.trainer_made("failed", passed=False)
        assert "adapter.sig.json" in await w.registry.files("g1")
        assert "adapter.sig.json" not in await w.registry.files("failed")
        verdicts = VerdictStore(w.redis, w.registry.prefix)
        assert (await verdicts.report("g1")) == _gate("g1")
        signing = signing_verdicts(verdicts, w.registry, TRAINER)
        assert isinstance(signing, SigningVerdicts)
        assert signing_verdicts(verdicts, w.registry, None) is verdicts
        await verdicts.raise_flags(["input"])
        assert await signing.drift_flags() == {"input"}
        await signing.clear_flags()
        assert await signing.drift_flags() == set()

    run(body)


def test_rollback_past_unloadable_adapters_to_nothing_is_one_error(
    run: Callable[[Body], None],
) -> None:
    async def body(w: World) -> None:
        await w.registry.register(_artifact(w.tmp, "x1", value=-9.0))
        await w.trainer_made("g1")
        await w.registry.promote("x1", actor="m", reason="r", forced=True)
        await w.registry.promote("g1", actor="t", reason="gate")
        with pytest.raises(RegistryError, match="nothing to roll back to"):
            await w.registry.rollback("v1", actor="ops", reason="r")
        assert (await w.registry.active("v1")).adapter_id == "g1"  # type: ignore[union-attr]

    run(body)


def test_gauges_follow_the_registry_without_a_swap() -> None:
    """No record yet: no mismatch, nothing forced (the gauges exist at 0)."""
    metrics = Metrics()
    assert metrics.registry.get_sample_value("borderline_adapter_mismatch") == 0
    assert metrics.registry.get_sample_value("borderline_adapter_forced") == 0


def test_the_trainers_rollbacks_trust_the_workers_key_or_its_own(tmp_path: Path) -> None:
    from adapters.registry.keys import make_key_pair
    from adapters.registry.signing import key_id
    from streams.service.trust import adapter_trust, signing_key, trainer_trust
    from streams.wire.settings import Settings

    plain = Settings.model_validate({"model": {"dir": str(tmp_path / "model")}})
    assert trainer_trust(plain, None) is None
    assert signing_key(plain) is None
    own = trainer_trust(plain, TRAINER)
    assert own is not None and own.verify_key is not None
    assert key_id(own.verify_key) == key_id(TRAINER.public_key())
    private, public = make_key_pair(tmp_path / "keys")
    keyed = Settings.model_validate(
        {
            "model": {"dir": str(tmp_path / "model")},
            "adapters": {"signing_key_file": str(private), "verify_key_file": str(public)},
        }
    )
    key = signing_key(keyed)
    assert key is not None
    workers = adapter_trust(keyed)
    assert workers.verify_key is not None
    assert key_id(workers.verify_key) == key_id(key.public_key())
    trusted = trainer_trust(keyed, None)
    assert trusted is not None and trusted.verify_key is not None
    assert adapter_trust(plain).verify_key is None  # no key: only the bootstrap
