"""The console's audit log: every state change (label, skip, undo, release, sign-in, user and
exclusion changes) appended to a Redis stream that only grows (trimmed by nothing in the console).
Leads read it in the lead view and through the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from streams.console.keys import ConsoleKeys, text

__all__ = ["AuditEntry", "AuditLog"]


@dataclass(frozen=True)
class AuditEntry:
    entry_id: str
    at: float
    actor: str
    action: str
    target: str
    detail: str


def _entry(actor: str, action: str, target: str, now: float, detail: str) -> dict[str, str]:
    return {"at": repr(now), "actor": actor, "action": action, "target": target, "detail": detail}


@dataclass
class AuditLog:
    redis: Redis
    keys: ConsoleKeys

    async def append(
        self, actor: str, action: str, target: str, *, now: float, detail: str = ""
    ) -> str:
        entry_id = await self.redis.xadd(
            self.keys.audit,
            _entry(actor, action, target, now, detail),  # type: ignore[arg-type]
        )
        return text(entry_id)

    def append_in(
        self, pipe: Pipeline, actor: str, action: str, target: str, *, now: float, detail: str = ""
    ) -> None:
        """The same entry, queued on a pipeline (written with the change it records)."""
        pipe.xadd(self.keys.audit, _entry(actor, action, target, now, detail))  # type: ignore[arg-type]

    async def latest(self, count: int = 100) -> list[AuditEntry]:
        rows: Any = await self.redis.xrevrange(self.keys.audit, count=count)
        out = []
        for entry_id, fields in rows:
            f = {text(k): text(v) for k, v in fields.items()}
            out.append(
                AuditEntry(
                    text(entry_id),
                    float(f["at"]),
                    f["actor"],
                    f["action"],
                    f["target"],
                    f.get("detail", ""),
                )
            )
        return out
