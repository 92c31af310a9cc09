"""The adapter registry in Redis: the adapters themselves (they are small: ~300 KB), the active
adapter per policy version, and the history of promotions and rollbacks with who or what did
them and why.

Every change of the active adapter is one Lua script, so it is atomic: two promotions racing are
serialised, each gets a strictly increasing epoch, and the active key always holds the last one.
Workers are told on a pub/sub channel but never trust the message: they re-read the active key,
so a late or lost message cannot leave two workers disagreeing for longer than one poll.

A `RegistryJournal`, when given, is told of every registration (with the files) and every change
of the active adapter (with its record) after Redis took it: the streams side writes them to
topics, so that the registry can be rebuilt from the record.

Given an `AdapterTrust`, `fetch` places only adapters the trainer signed (or the base's own),
and `rollback` goes back to the most recent earlier adapter that verifies, skipping any that does
not (`adapters.registry.signing`).

Keys (prefix ``p``): ``p:adapter:{id}:manifest``, ``p:adapter:{id}:file``,
``p:adapter:{id}:signature`` (the trainer's signature document), ``p:adapters``
(ids by creation time), ``p:adapter:active:{policy}``, ``p:adapter:history:{policy}``,
``p:adapter:epoch``; channel ``p:adapter:events``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from adapters.registry.artifact import (
    ADAPTER_FILE,
    MANIFEST_FILE,
    AdapterArtifact,
    AdapterManifest,
    ArtifactError,
    verify_files,
)
from adapters.registry.signing import SIGNATURE_FILE, AdapterSignature, AdapterTrust
from models.errors import BorderlineError

__all__ = [
    "ActiveRecord",
    "AdapterRegistry",
    "RegistryError",
    "RegistryJournal",
    "rollback_candidates",
]

log = logging.getLogger(__name__)


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"unexpected Redis reply {type(value).__name__}")


class RegistryError(BorderlineError):
    """Unknown adapter, nothing to roll back to, or a conflicting registration."""


class ActiveRecord(BaseModel):
    """Which adapter serves a policy, since when, by whose action: the registry's active record
    (also what the change channel announces)."""

    model_config = ConfigDict(frozen=True)

    adapter_id: str
    previous: str | None = None
    epoch: int
    action: str  # "promote" or "rollback"
    actor: str
    reason: str
    at: float
    policy_version: str
    forced: bool = False  # promoted by hand without a passed gate report (`--force`)

    @field_validator("previous", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return value or None

    @classmethod
    def parse(cls, raw: bytes | str) -> ActiveRecord:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise RegistryError(f"malformed active-adapter record: {exc}") from exc


class RegistryJournal(Protocol):
    """Where registry changes are recorded, after Redis took them."""

    async def adapter_registered(
        self, manifest: AdapterManifest, files: Mapping[str, bytes]
    ) -> None: ...

    async def adapter_changed(self, record: ActiveRecord) -> None: ...


# KEYS: active, history, epoch, manifest-of-target
# ARGV: adapter_id (or "" = the current's previous), actor, reason, now, channel, policy, action,
# forced ("1" or "0")
_CHANGE_ACTIVE = """
local target = ARGV[1]
local cur = redis.call('GET', KEYS[1])
local previous = false
if cur then previous = cjson.decode(cur)['adapter_id'] end
if target == '' then
  if not cur then return redis.error_reply('NOACTIVE nothing is active for this policy') end
  local prev = cjson.decode(cur)['previous']
  if not prev or prev == cjson.null then
    return redis.error_reply('NOPREVIOUS the active adapter has no previous one')
  end
  target = prev
end
if redis.call('EXISTS', KEYS[4] .. target .. ':manifest') == 0 then
  return redis.error_reply('UNKNOWN ' .. target)
end
if target == previous then return redis.error_reply('ALREADY ' .. target) end
local epoch = redis.call('INCR', KEYS[3])
local rec = cjson.encode({adapter_id=target, previous=previous, epoch=epoch, actor=ARGV[2],
  reason=ARGV[3], at=tonumber(ARGV[4]), action=ARGV[7], policy_version=ARGV[6],
  forced=(ARGV[8] == '1')})
redis.call('SET', KEYS[1], rec)
redis.call('LPUSH', KEYS[2], rec)
redis.call('PUBLISH', ARGV[5], rec)
return rec
"""


# KEYS: manifest, file, index; ARGV: manifest bytes, file bytes, created_at, adapter_id
_REGISTER = """
local stored = redis.call('GET', KEYS[1])
if stored then
  if stored == ARGV[1] then return 0 end
  return redis.error_reply('TAKEN')
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


class AdapterRegistry:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        journal: RegistryJournal | None = None,
        trust: AdapterTrust | None = None,
        loads: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        """``journal``: told of every new registration and every change of the active adapter
        (None: not recorded, e.g. while the registry is being rebuilt from the record).
        ``trust``: what `fetch` places and `rollback` goes back to (None: hashes only, for the
        tools that do not load adapters). ``loads``: a test load of an adapter that verifies,
        raising `BorderlineError` when a worker could not load it; `rollback` goes only to one
        that loads (None: verified is enough)."""
        self.redis = redis
        self.prefix = prefix
        self.journal = journal
        self.trust = trust
        self.loads = loads
        self._change = redis.register_script(_CHANGE_ACTIVE)
        self._register = redis.register_script(_REGISTER)

    # --- keys -------------------------------------------------------------------------------
    def _adapter(self, adapter_id: str, part: str) -> str:
        return f"{self.prefix}:adapter:{adapter_id}:{part}"

    def _active(self, policy: str) -> str:
        return f"{self.prefix}:adapter:active:{policy}"

    def _history(self, policy: str) -> str:
        return f"{self.prefix}:adapter:history:{policy}"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:adapter:events"

    # --- adapters ---------------------------------------------------------------------------
    async def register(self, artifact: AdapterArtifact) -> bool:
        """Store an adapter; True if new. Re-registering the same bytes is a no-op; another
        adapter under an existing id is refused."""
        files = artifact.files()
        adapter_id = artifact.adapter_id
        try:
            created = await self._register(
                keys=[
                    self._adapter(adapter_id, "manifest"),
                    self._adapter(adapter_id, "file"),
                    f"{self.prefix}:adapters",
                ],
                args=[
                    files[MANIFEST_FILE],
                    files[ADAPTER_FILE],
                    artifact.manifest.created_at,
                    adapter_id,
                ],
            )
        except ResponseError as exc:
            if str(exc).startswith("TAKEN"):
                raise RegistryError(
                    f"adapter id {adapter_id!r} is taken by another adapter"
                ) from None
            raise
        if created and self.journal is not None:
            await self.journal.adapter_registered(artifact.manifest, files)
        return bool(created)

    async def files(self, adapter_id: str) -> dict[str, bytes]:
        """Manifest and adapter file, and the trainer's signature when it signed the adapter."""
        manifest, data, signature = await self.redis.mget(
            [
                self._adapter(adapter_id, "manifest"),
                self._adapter(adapter_id, "file"),
                self._adapter(adapter_id, "signature"),
            ]
        )
        if manifest is None or data is None:
            raise RegistryError(f"unknown adapter {adapter_id!r} (see `borderline adapters list`)")
        files = {MANIFEST_FILE: _bytes(manifest), ADAPTER_FILE: _bytes(data)}
        if signature is not None:
            files[SIGNATURE_FILE] = _bytes(signature)
        return files

    async def attach_signature(self, signature: AdapterSignature) -> None:
        """Keep the trainer's signature next to its adapter (the adapter must be registered);
        the journal records the adapter again, with the signature."""
        if not await self.redis.exists(self._adapter(signature.adapter_id, "manifest")):
            raise RegistryError(f"unknown adapter {signature.adapter_id!r}: nothing to sign")
        await self.redis.set(
            self._adapter(signature.adapter_id, "signature"), signature.model_dump_json()
        )
        if self.journal is not None:  # on the record too: a rebuilt registry keeps it
            files = await self.files(signature.adapter_id)
            manifest = AdapterManifest.model_validate_json(files[MANIFEST_FILE])
            await self.journal.adapter_registered(manifest, files)

    async def verify(self, adapter_id: str, *, expected_base: str) -> AdapterManifest:
        """``adapter_id``'s files checked as `fetch` checks them (the trust, sha256, base model),
        without placing them; `ArtifactError` or `RegistryError` when they do not pass."""
        files = await self.files(adapter_id)
        if self.trust is not None:
            self.trust.check(files)
        manifest = verify_files(files, expected_base=expected_base)
        if manifest.adapter_id != adapter_id:
            raise ArtifactError(
                f"registry entry {adapter_id} holds adapter {manifest.adapter_id}'s manifest"
            )
        return manifest

    async def fetch(
        self, adapter_id: str, directory: Path, *, expected_base: str
    ) -> AdapterArtifact:
        """Read ``adapter_id``'s files from the registry, verify them (the trust when given, then
        sha256 and base model) and place them in ``directory``: the one way a process gets an
        adapter it can load."""
        files = await self.files(adapter_id)
        if self.trust is not None:
            self.trust.check(files)
        artifact = AdapterArtifact.from_files(files, directory, expected_base=expected_base)
        if artifact.adapter_id != adapter_id:
            raise ArtifactError(
                f"registry entry {adapter_id} holds adapter {artifact.adapter_id}'s manifest"
            )
        return artifact

    async def manifest(self, adapter_id: str) -> AdapterManifest:
        raw = await self.redis.get(self._adapter(adapter_id, "manifest"))
        if raw is None:
            raise RegistryError(f"unknown adapter {adapter_id!r} (see `borderline adapters list`)")
        return AdapterManifest.model_validate_json(raw)

    async def adapters(self) -> list[AdapterManifest]:
        """Every registered adapter, oldest first."""
        ids = await self.redis.zrange(f"{self.prefix}:adapters", 0, -1)
        return [await self.manifest(_bytes(raw).decode()) for raw in ids]

    # --- the active adapter -----------------------------------------------------------------
    async def active(self, policy: str) -> ActiveRecord | None:
        raw = await self.redis.get(self._active(policy))
        return None if raw is None else ActiveRecord.parse(raw)

    async def history(self, policy: str, limit: int = 50) -> list[ActiveRecord]:
        if limit <= 0:
            return []
        return [
            ActiveRecord.parse(r)
            for r in await self.redis.lrange(self._history(policy), 0, limit - 1)
        ]

    async def _set_active(
        self,
        target: str,
        policy: str,
        *,
        action: str,
        actor: str,
        reason: str,
        now: float | None,
        forced: bool = False,
    ) -> ActiveRecord:
        try:
            raw = await self._change(
                keys=[
                    self._active(policy),
                    self._history(policy),
                    f"{self.prefix}:adapter:epoch",
                    f"{self.prefix}:adapter:",
                ],
                args=[
                    target,
                    actor,
                    reason,
                    time.time() if now is None else now,
                    self.channel,
                    policy,
                    action,
                    "1" if forced else "0",
                ],
            )
        except ResponseError as exc:
            message = str(exc)
            if message.startswith("UNKNOWN"):
                raise RegistryError(
                    f"unknown adapter {message.split(' ', 1)[1]!r} (see `borderline adapters list`)"
                ) from None
            if message.startswith("ALREADY"):
                raise RegistryError(
                    f"adapter {message.split(' ', 1)[1]!r} is already active for policy {policy}"
                ) from None
            if message.startswith(("NOACTIVE", "NOPREVIOUS")):
                raise RegistryError(
                    f"nothing to roll back to for policy {policy}: {message.split(' ', 1)[1]}"
                ) from None
            raise
        record = ActiveRecord.parse(raw)
        if self.journal is not None:
            await self.journal.adapter_changed(record)
        return record

    async def promote(
        self,
        adapter_id: str,
        *,
        actor: str,
        reason: str,
        policy: str | None = None,
        now: float | None = None,
        forced: bool = False,
    ) -> ActiveRecord:
        """Make ``adapter_id`` active for its policy (or ``policy``); atomic, announced.
        ``forced``: by hand without a passed gate report (the record says so, workers alert)."""
        manifest = await self.manifest(adapter_id)
        return await self._set_active(
            adapter_id,
            policy or manifest.policy_version,
            action="promote",
            actor=actor,
            reason=reason,
            now=now,
            forced=forced,
        )

    async def rollback(
        self,
        policy: str,
        *,
        actor: str,
        reason: str,
        now: float | None = None,
        expected_base: str | None = None,
    ) -> ActiveRecord:
        """Go back to the most recent earlier adapter of ``policy`` that verifies (the trust,
        sha256, and ``expected_base``, by default the active adapter's base) and, with ``loads``,
        loads, skipping those that do not; atomic, announced. `RegistryError` when none does."""
        current = await self.active(policy)
        if current is None:
            raise RegistryError(
                f"nothing to roll back to for policy {policy}: nothing is active for this policy"
            )
        if expected_base is None:
            expected_base = (await self.manifest(current.adapter_id)).base_model_version
        skipped: list[str] = []
        for candidate in rollback_candidates(current, await self.history(policy, limit=200)):
            try:
                await self.verify(candidate, expected_base=expected_base)
                if self.loads is not None:
                    await self.loads(candidate)
            except BorderlineError as exc:  # ArtifactError, RegistryError, AdapterFileError
                skipped.append(str(exc) if candidate in str(exc) else f"{candidate}: {exc}")
                log.warning("rollback of policy %s passes over %s", policy, skipped[-1])
                continue
            return await self._set_active(
                candidate, policy, action="rollback", actor=actor, reason=reason, now=now
            )
        why = "; ".join(skipped) if skipped else "the active adapter has no previous one"
        raise RegistryError(f"nothing to roll back to for policy {policy}: {why}")


class _Past(Protocol):
    @property
    def adapter_id(self) -> str: ...
    @property
    def previous(self) -> str | None: ...


def rollback_candidates(current: _Past, history: Sequence[_Past]) -> list[str]:
    """Where a rollback may go, most recent first: the adapter active before ``current``, then
    every adapter of the history (newest first), each once, never ``current`` itself.

    >>> from types import SimpleNamespace as R
    >>> now = R(adapter_id="c", previous="b")
    >>> rollback_candidates(now, [now, R(adapter_id="b", previous="a"), R(adapter_id="a",
    ...     previous=None)])
    ['b', 'a']
    """
    seen: list[str] = []
    for past in [current, *history]:
        for adapter_id in (past.adapter_id, past.previous):
            if adapter_id and adapter_id != current.adapter_id and adapter_id not in seen:
                seen.append(adapter_id)
    return seen
