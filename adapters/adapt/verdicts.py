"""The trainer's Redis view of its verdicts and of the drift flags that trigger it: the gate
report of every candidate (by adapter id, and in judging order), and the set of drift signals
raised since the last promotion. The only module that builds these keys.

Keys (prefix ``p``): ``p:gate:{adapter_id}`` (one report), ``p:gate:reports`` (every report,
oldest first), ``p:drift:flags`` (names of the detectors that fired: input, prediction, concept).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

__all__ = ["GateRecord", "VerdictKeys", "VerdictStore"]


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
    decision: str | None = None
    decision_reason: str | None = None

    @property
    def promoted(self) -> bool:
        """The candidate went live (older reports: it passed the gate, which then meant so)."""
        return self.decision == "promote" if self.decision is not None else self.passed


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
