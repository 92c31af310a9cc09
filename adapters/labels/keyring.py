"""Reviewers' signing keys: each reviewer's key is derived from the service's key secret and a
nonce issued to that reviewer (`adapters.labels.admission.derive_key`). Redis holds the nonces
(``{prefix}:reviewers:keys``, reviewer -> nonce), never a key; a new nonce is a new key
(rotation). Issued nonces are told to a `KeyJournal` when one is given (the streams side writes
them to the reviewer-events topic), so that a rebuilt store gives every reviewer the same key.

The console signs for its signed-in users with `key_for`; the collector verifies with it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Protocol

from redis.asyncio import Redis

from adapters.labels.admission import derive_key

__all__ = ["KeyJournal", "ReviewerKeys"]


class KeyJournal(Protocol):
    """Where issued key nonces are recorded, after Redis took them."""

    async def reviewer_key_issued(self, reviewer_id: str, nonce: str) -> None: ...


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ReviewerKeys:
    def __init__(
        self, redis: Redis, prefix: str, secret: bytes, *, journal: KeyJournal | None = None
    ) -> None:
        """``secret``: the service's key secret (settings ``review.key_secret``); ``journal``:
        told of every nonce issued (None: not recorded, e.g. while the store is rebuilt)."""
        if not secret:
            raise ValueError("the reviewer key secret is empty")
        self.redis = redis
        self.key = f"{prefix}:reviewers:keys"
        self.secret = secret
        self.journal = journal

    async def issue(self, reviewer_id: str, *, nonce: str | None = None) -> bytes:
        """Give ``reviewer_id`` a new key (replacing any earlier one) and return it. ``nonce``:
        the one on the record (a rebuild); by default a fresh random one, recorded."""
        fresh = nonce is None
        nonce = nonce or secrets.token_hex(16)
        await self.redis.hset(self.key, reviewer_id, nonce)
        if fresh and self.journal is not None:
            await self.journal.reviewer_key_issued(reviewer_id, nonce)
        return derive_key(self.secret, reviewer_id, nonce)

    async def key_for(self, reviewer_id: str) -> bytes | None:
        """The reviewer's current key, or None when none was issued."""
        nonce = await self.redis.hget(self.key, reviewer_id)
        return None if nonce is None else derive_key(self.secret, reviewer_id, _s(nonce))

    async def nonce_of(self, reviewer_id: str) -> str | None:
        nonce = await self.redis.hget(self.key, reviewer_id)
        return None if nonce is None else _s(nonce)

    async def ensure(self, reviewer_ids: Iterable[str]) -> dict[str, bytes]:
        """The key of each reviewer, issuing one to those without (the simulated panel, set-up)."""
        out = {}
        for reviewer_id in reviewer_ids:
            key = await self.key_for(reviewer_id)
            out[reviewer_id] = key if key is not None else await self.issue(reviewer_id)
        return out
