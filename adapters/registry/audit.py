"""The adapter audit log: every promotion by hand past the gate (``borderline adapters promote
--force --reason TEXT``) with who made it, when, why, and what the gate had said, written before
the registry changes (so no forced change is without its entry). Appended to, never rewritten (the
code has no way to remove an entry); read with ``borderline adapters audit``. Key (prefix ``p``):
``p:audit:adapters``, a list, oldest first."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

__all__ = ["AuditEntry", "AuditLog"]


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    at: float
    actor: str
    action: str  # "force-promote"
    adapter_id: str
    policy_version: str
    reason: str
    gate: str  # what the gate had said of the adapter ("no gate report", "failed: ...")


class AuditLog:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.key = f"{prefix}:audit:adapters"

    async def append(self, entry: AuditEntry) -> int:
        """Add ``entry`` at the end; the number of entries now."""
        return int(await self.redis.rpush(self.key, entry.model_dump_json()))

    async def entries(self, limit: int = 50) -> list[AuditEntry]:
        """The last ``limit`` entries, oldest first."""
        if limit <= 0:
            return []
        raw = await self.redis.lrange(self.key, -limit, -1)
        return [AuditEntry.model_validate_json(r) for r in raw]

    async def count(self) -> int:
        return int(await self.redis.llen(self.key))
