"""The trainer's verdict store on a real redis-server (the unit session's own): a gate report is
kept under its adapter id and in judging order, and read back as the record written; drift flags
are raised once per name, read as text and spent together; the keys are the ones every reader
(workers, collector, trainer, demo) has always used."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from adapters.adapt.verdicts import GateRecord, VerdictKeys, VerdictStore


def _record(
    adapter_id: str, *, passed: bool = True, decision: str | None = "promote"
) -> GateRecord:
    return GateRecord(
        adapter_id=adapter_id,
        policy_version="v2",
        triggers=["policy_change"],
        expert_labels=120,
        train_labels=60,
        eval_labels=40,
        train_seconds=12.5,
        passed=passed,
        reason="passed: candidate kappa 0.810 >= required 0.700 (min_kappa 0.700, no incumbent)",
        candidate_kappa=0.81,
        incumbent_kappa=None,
        required_kappa=0.7,
        eval_items=40,
        expert_ceiling=0.78,
        shadow_agreement=0.93,
        decision=decision,
        decision_reason="gate passed: kappa 0.810 >= 0.700",
    )


def test_keys_keep_their_names() -> None:
    keys = VerdictKeys("p")
    assert (keys.report("a1"), keys.reports, keys.drift_flags) == (
        "p:gate:a1",
        "p:gate:reports",
        "p:drift:flags",
    )


def test_reports_are_kept_by_id_and_in_order(run_redis: Any, prefix: str) -> None:
    first, second = _record("a1"), _record("a2", passed=False, decision="refuse")

    async def body(redis: Redis) -> tuple[Any, ...]:
        store = VerdictStore(redis, prefix)
        empty = await store.reports()
        await store.record(first)
        await store.record(second)
        return (
            empty,
            await store.reports(),
            await store.reports(1),
            await store.report("a1"),
            (await store.report("missing")),
        )

    empty, every, later, by_id, missing = run_redis(body)
    assert empty == []
    assert every == [first, second]
    assert later == [second]
    assert by_id == first
    assert missing is None


def test_a_report_from_before_decisions_were_recorded_reads_passed_as_promoted(
    run_redis: Any, prefix: str
) -> None:
    old = {"adapter_id": "a0", "policy_version": "v1", "passed": True, "reason": "passed: ..."}

    async def body(redis: Redis) -> list[GateRecord]:
        import json

        await redis.rpush(VerdictKeys(prefix).reports, json.dumps(old))
        return await VerdictStore(redis, prefix).reports()

    (record,) = run_redis(body)
    assert record.decision is None and record.promoted
    assert not _record("a", decision="wait").promoted
    assert _record("a", decision="promote").promoted


def test_drift_flags_are_raised_once_read_as_text_and_spent_together(
    run_redis: Any, prefix: str
) -> None:
    async def body(redis: Redis) -> tuple[set[str], set[str], set[str]]:
        store = VerdictStore(redis, prefix)
        before = await store.drift_flags()
        await store.raise_flags([])  # nothing to raise: no empty SADD
        await store.raise_flags(["input", "prediction"])
        await store.raise_flags(["input"])
        raised = await store.drift_flags()
        await store.clear_flags()
        return before, raised, await store.drift_flags()

    before, raised, after = run_redis(body)
    assert before == set()
    assert raised == {"input", "prediction"}
    assert after == set()
