"""The trainer's Redis view of its verdicts and of the drift flags that trigger it: the gate
report of every candidate (by adapter id, and in judging order), and the set of drift signals
raised since the last promotion. The only module that builds these keys.

Keys (prefix ``p``): ``p:gate:{adapter_id}`` (one report), ``p:gate:reports`` (every report,
oldest first), ``p:drift:flags`` (names of the detectors that fired: input, prediction, concept),
``p:trainer:status`` (the trainer's last step: what it did or is waiting for, and the live
adapter's kappa on the audit draws).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

__all__ = ["GateRecord", "TrainerStatus", "VerdictKeys", "VerdictStore"]


class GateRecord(BaseModel):
    """One candidate's gate report as the trainer keeps it: the gate's figures, the data it
    was trained and judged on, and what was done with it (``decision``: promote, refuse or
    wait; absent in reports written before decisions were recorded)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    adapter_id: str
    policy_version: str
    triggers: list[str] = []
    expert_labels: int | None = None
    train_labels: int | None = None
    eval_labels: int | None = None
    train_seconds: float | None = None
    passed: bool
    reason: str = ""
    candidate_kappa: float | None = None
    incumbent_kappa: float | None = None
    required_kappa: float | None = None
    eval_items: int | None = None
    expert_ceiling: float | None = None
    shadow_agreement: float | None = None
    # the intervals behind the verdict (absent in reports written before the gate used them)
    candidate_low: float | None = None
    candidate_high: float | None = None
    difference: float | None = None
    difference_low: float | None = None
    difference_high: float | None = None
    confidence: float | None = None
    class_counts: dict[str, int] | None = None
    decision: str | None = None
    decision_reason: str | None = None

    @property
    def promoted(self) -> bool:
        """The candidate went live (older reports: it passed the gate, which then meant so)."""
        return self.decision == "promote" if self.decision is not None else self.passed


class TrainerStatus(BaseModel):
    """The trainer's last step as others show it: ``reason`` says what it did or what it is
    waiting for (which figure, how many more labels); ``live`` is the live adapter's weighted
    kappa on the audit draws labelled since it went live (`adapters.adapt.estimate.Estimate`
    as a dict), ``live_text`` its wording ("not enough audit labels (n of m)" below the
    minimum)."""

    model_config = ConfigDict(frozen=True)

    at: float
    policy_version: str
    reason: str
    adapter_id: str | None = None
    live: dict[str, float | int | None] | None = None
    live_text: str | None = None


class VerdictKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def report(self, adapter_id: str) -> str:
        return f"{self.prefix}:gate:{adapter_id}"

    @property
    def reports(self) -> str:
        return f"{self.prefix}:gate:reports"

    @property
    def drift_flags(self) -> str:
        return f"{self.prefix}:drift:flags"

    @property
    def status(self) -> str:
        return f"{self.prefix}:trainer:status"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class VerdictStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = VerdictKeys(prefix)

    # --- gate reports -----------------------------------------------------------------------
    async def record(self, report: GateRecord) -> None:
        """Keep a report under its adapter id and at the end of the list (one transaction)."""
        raw = report.model_dump_json()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.report(report.adapter_id), raw)
            pipe.rpush(self.keys.reports, raw)
            await pipe.execute()

    async def report(self, adapter_id: str) -> GateRecord | None:
        raw = await self.redis.get(self.keys.report(adapter_id))
        return None if raw is None else GateRecord.model_validate_json(raw)

    async def reports(self, start: int = 0) -> list[GateRecord]:
        """Every report from the ``start``-th on, oldest first."""
        raw = await self.redis.lrange(self.keys.reports, start, -1)
        return [GateRecord.model_validate_json(r) for r in raw]

    # --- drift flags ------------------------------------------------------------------------
    async def raise_flags(self, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            await self.redis.sadd(self.keys.drift_flags, *names)

    async def drift_flags(self) -> set[str]:
        return {_text(n) for n in await self.redis.smembers(self.keys.drift_flags)}

    async def clear_flags(self) -> None:
        await self.redis.delete(self.keys.drift_flags)

    # --- the trainer's status ---------------------------------------------------------------
    async def set_status(self, status: TrainerStatus) -> None:
        await self.redis.set(self.keys.status, status.model_dump_json())

    async def status(self) -> TrainerStatus | None:
        raw = await self.redis.get(self.keys.status)
        return None if raw is None else TrainerStatus.model_validate_json(raw)
