"""The policy store in Redis: published versions, the active one, the history, and the pub/sub
channel workers follow.

`PolicyStore.publish` is one Lua script, so it is atomic: the document is stored under its
version (a version never names two documents), the active version is set, the publication is
appended to the history with who and when, and it is announced on a pub/sub channel. Publishing
the active document again changes nothing; publishing an older, already stored version makes it
active again (recorded as ``reactivated``).

Keys (prefix ``p``): ``p:policy:{version}`` (the document, canonical JSON), ``p:policy:active``
(the active version, a plain string), ``p:policy:history`` (publications, oldest first); channel
``p:policy:events`` (the publication record, JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from adapters.policy.schema import Policy, PolicyError

__all__ = ["PolicyRecord", "PolicyStore", "Publication"]


class PolicyRecord(BaseModel):
    """One publication: which version became active, instead of which, by whom and when."""

    model_config = ConfigDict(frozen=True)

    version: str
    previous: str | None = None
    action: Literal["published", "reactivated"]
    actor: str
    at: float
    sha256: str

    @field_validator("previous", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return value or None

    @classmethod
    def parse(cls, raw: bytes | str) -> PolicyRecord:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise PolicyError(f"malformed policy record: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


@dataclass(frozen=True)
class Publication:
    """What `PolicyStore.publish` did: ``changed`` is False when the document was already the
    active one (``record`` is then that earlier publication)."""

    record: PolicyRecord
    changed: bool


# KEYS: document, active, history; ARGV: document JSON, version, actor, now, channel, sha256
# Returns {changed (0/1), record JSON}.
_PUBLISH = """
local stored = redis.call('GET', KEYS[1])
if stored and stored ~= ARGV[1] then return redis.error_reply('TAKEN') end
local current = redis.call('GET', KEYS[2])
if current == ARGV[2] then
  return {0, redis.call('LINDEX', KEYS[3], -1)}
end
local action = 'published'
if stored then action = 'reactivated' else redis.call('SET', KEYS[1], ARGV[1]) end
local rec = cjson.encode({version=ARGV[2], previous=current, action=action, actor=ARGV[3],
  at=tonumber(ARGV[4]), sha256=ARGV[6]})
redis.call('SET', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], rec)
redis.call('PUBLISH', ARGV[5], rec)
return {1, rec}
"""


class PolicyStore:
    """Published policies in Redis (see the module docstring for the keys)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._publish = redis.register_script(_PUBLISH)

    # --- keys -------------------------------------------------------------------------------
    def _document(self, version: str) -> str:
        return f"{self.prefix}:policy:{version}"

    @property
    def _active(self) -> str:
        return f"{self.prefix}:policy:active"

    @property
    def _history(self) -> str:
        return f"{self.prefix}:policy:history"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:policy:events"

    # --- writing ----------------------------------------------------------------------------
    async def publish(self, policy: Policy, *, actor: str, now: float) -> Publication:
        """Store ``policy`` and make it the active one, atomically; announce it on `channel`.
        The same document again is a no-op; another document under a stored version is
        refused."""
        try:
            changed, raw = await self._publish(
                keys=[self._document(policy.version), self._active, self._history],
                args=[
                    policy.canonical_json(),
                    policy.version,
                    actor,
                    repr(float(now)),
                    self.channel,
                    policy.sha256(),
                ],
            )
        except ResponseError as exc:
            if str(exc).startswith("TAKEN"):
                stored = await self.get(policy.version)
                raise PolicyError(
                    f"policy version {policy.version!r} is already published with another "
                    f"document (sha256 {stored.sha256()[:12]}, this one {policy.sha256()[:12]}): "
                    "give the new document a new version"
                ) from None
            raise
        return Publication(record=PolicyRecord.parse(raw), changed=bool(changed))

    # --- reading ----------------------------------------------------------------------------
    async def active_version(self) -> str | None:
        raw = await self.redis.get(self._active)
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))

    async def active(self) -> Policy | None:
        """The active policy, or None when none was ever published."""
        version = await self.active_version()
        return None if version is None else await self.get(version)

    async def get(self, version: str) -> Policy:
        raw = await self.redis.get(self._document(version))
        if raw is None:
            raise PolicyError(
                f"unknown policy version {version!r} (see `borderline policy history`)"
            )
        return Policy.model_validate_json(raw)

    async def history(self) -> list[PolicyRecord]:
        """Every publication, oldest first."""
        return [PolicyRecord.parse(raw) for raw in await self.redis.lrange(self._history, 0, -1)]

    async def record(self, version: str) -> PolicyRecord | None:
        """The latest publication of ``version``, or None if it was never published."""
        for record in reversed(await self.history()):
            if record.version == version:
                return record
        return None
