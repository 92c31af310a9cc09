"""The expert label store in Redis: registered reviewers, every label once per (item, reviewer)
and policy version, the items sent to review (text, embedding, scores) so that labels can become
training data, open requests, and which reviewers are excluded from training.

Reviewer registrations and clearances are also told to a `ReviewerJournal` when one is given (the
streams side writes them to a topic), so that the store can be rebuilt from the record.

Labels under different policy versions live under different keys and are never mixed. Keys
(prefix ``p``, policy ``v``): ``p:reviewers``, ``p:reviewers:excluded``, ``p:reviewers:cleared``,
``p:labels:{v}:{item}`` (reviewer -> label), ``p:labels:{v}:items`` (item -> first label time),
``p:review:item:{item}``, ``p:review:asked:{item}`` (request id -> policy version, every request
issued for the item, second opinions included: what a label must answer), ``p:review:open:{v}``
(item -> requested at).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from adapters.labels.consensus import consensus, split_of

__all__ = ["LabelStore", "LabeledExample", "ReviewedItem", "ReviewerJournal"]


class ReviewerJournal(Protocol):
    """Where changes to the reviewer registry are recorded, after Redis took them."""

    async def reviewers_added(self, reviewer_ids: Sequence[str]) -> None: ...

    async def reviewer_cleared(self, reviewer_id: str) -> None: ...


@dataclass(frozen=True)
class ReviewedItem:
    item_id: str
    text: str
    embedding: np.ndarray | None
    p_violating: float
    reason: str
    requested_at: float
    request_id: str | None = None
    policy_version: str | None = None
    audit_drawn: bool = False
    audit_rate: float | None = None


@dataclass(frozen=True)
class LabeledExample:
    item_id: str
    text: str
    label: str
    votes: int


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StoredVote(BaseModel):
    """One reviewer's label of one item, as stored (the hash field is the reviewer id)."""

    model_config = ConfigDict(frozen=True)

    label: str
    at: float


class _ReviewDoc(BaseModel):
    """The stored form of an item sent to review."""

    text: str
    p_violating: float
    reason: str
    requested_at: float
    embedding: bytes | None = None
    request_id: str | None = None
    policy_version: str | None = None
    audit_drawn: bool = False
    audit_rate: float | None = None


@dataclass(frozen=True)
class LabelKeys:
    """Every Redis key of the label store, built here and nowhere else."""

    prefix: str

    @property
    def reviewers(self) -> str:
        return f"{self.prefix}:reviewers"

    @property
    def excluded(self) -> str:
        return f"{self.prefix}:reviewers:excluded"

    @property
    def cleared(self) -> str:
        return f"{self.prefix}:reviewers:cleared"

    @property
    def policies(self) -> str:
        return f"{self.prefix}:labels:policies"

    def votes(self, policy: str, item_id: str) -> str:
        return f"{self.prefix}:labels:{policy}:{item_id}"

    def items(self, policy: str) -> str:
        return f"{self.prefix}:labels:{policy}:items"

    def review_item(self, item_id: str) -> str:
        return f"{self.prefix}:review:item:{item_id}"

    def asked(self, item_id: str) -> str:
        return f"{self.prefix}:review:asked:{item_id}"

    def open_requests(self, policy: str) -> str:
        return f"{self.prefix}:review:open:{policy}"


class LabelStore:
    def __init__(
        self, redis: Redis, prefix: str, *, journal: ReviewerJournal | None = None
    ) -> None:
        """``journal``: told of every reviewer registration and clearance (None: not recorded,
        e.g. while the store is being rebuilt from the record)."""
        self.redis = redis
        self.prefix = prefix
        self.keys = LabelKeys(prefix)
        self.journal = journal

    # --- reviewers ------------------------------------------------------------------------
    async def register_reviewers(self, reviewer_ids: Iterable[str]) -> int:
        """Register reviewers; return how many were new. Recorded when any was new."""
        ids = list(reviewer_ids)
        added = int(await self.redis.sadd(self.keys.reviewers, *ids)) if ids else 0
        if added and self.journal is not None:
            await self.journal.reviewers_added(ids)
        return added

    async def registered(self) -> set[str]:
        return {_s(r) for r in await self.redis.smembers(self.keys.reviewers)}

    async def is_registered(self, reviewer_id: str) -> bool:
        return bool(await self.redis.sismember(self.keys.reviewers, reviewer_id))

    async def excluded(self) -> set[str]:
        return {_s(r) for r in await self.redis.smembers(self.keys.excluded)}

    async def cleared(self) -> set[str]:
        return {_s(r) for r in await self.redis.smembers(self.keys.cleared)}

    async def set_excluded(self, reviewer_ids: Iterable[str]) -> None:
        key = self.keys.excluded
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            ids = list(reviewer_ids)
            if ids:
                pipe.sadd(key, *ids)
            await pipe.execute()

    async def clear(self, reviewer_id: str) -> None:
        """A person vouches for a reviewer: their labels count for training again."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self.keys.cleared, reviewer_id)
            pipe.srem(self.keys.excluded, reviewer_id)
            await pipe.execute()
        if self.journal is not None:
            await self.journal.reviewer_cleared(reviewer_id)

    # --- review requests ------------------------------------------------------------------
    async def record_requests(
        self, policy: str, items: Sequence[ReviewedItem], *, ttl_s: int = 30 * 24 * 3600
    ) -> None:
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in items:
                key = self.keys.review_item(item.item_id)
                doc: dict[str, str | bytes | float] = {
                    "text": item.text,
                    "p_violating": item.p_violating,
                    "reason": item.reason,
                    "requested_at": item.requested_at,
                    "audit_drawn": int(item.audit_drawn),
                    "policy_version": item.policy_version or policy,
                }
                if item.request_id is not None:
                    doc["request_id"] = item.request_id
                if item.audit_rate is not None:
                    doc["audit_rate"] = item.audit_rate
                if item.embedding is not None:
                    doc["embedding"] = np.asarray(item.embedding, dtype=np.float32).tobytes()
                pipe.hset(key, mapping=doc)  # type: ignore[arg-type]
                pipe.expire(key, ttl_s)
                if item.request_id is not None:
                    asked = self.keys.asked(item.item_id)
                    pipe.hset(asked, item.request_id, item.policy_version or policy)
                    pipe.expire(asked, ttl_s)
                pipe.zadd(self.keys.open_requests(policy), {item.item_id: item.requested_at})
            await pipe.execute()

    async def record_asked(
        self, item_id: str, request_id: str, policy: str, *, ttl_s: int = 30 * 24 * 3600
    ) -> None:
        """A request issued for an item already recorded (a second opinion)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.asked(item_id), request_id, policy)
            pipe.expire(self.keys.asked(item_id), ttl_s)
            await pipe.execute()

    async def requests_of(self, item_id: str) -> dict[str, str]:
        """Every request issued for ``item_id``: request id -> policy version (empty: never
        requested). Items recorded before requests were listed count by their own request."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.asked(item_id))
            pipe.hmget(self.keys.review_item(item_id), ["request_id", "policy_version"])
            asked, (request_id, policy) = await pipe.execute()
        out = {_s(r): _s(p) for r, p in asked.items()}
        if request_id is not None and policy is not None:
            out.setdefault(_s(request_id), _s(policy))
        return out

    async def open_count(self, policy: str) -> int:
        return int(await self.redis.zcard(self.keys.open_requests(policy)))

    async def reviewed_items(self, item_ids: Sequence[str]) -> dict[str, ReviewedItem]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                pipe.hgetall(self.keys.review_item(item_id))
            docs = await pipe.execute()
        out = {}
        for item_id, raw in zip(item_ids, docs, strict=True):
            if not raw:
                continue
            doc = _ReviewDoc.model_validate({_s(k): v for k, v in raw.items()})
            emb = doc.embedding
            out[item_id] = ReviewedItem(
                item_id=item_id,
                text=doc.text,
                embedding=None if emb is None else np.frombuffer(emb, dtype=np.float32),
                p_violating=doc.p_violating,
                reason=doc.reason,
                requested_at=doc.requested_at,
                request_id=doc.request_id,
                policy_version=doc.policy_version,
                audit_drawn=doc.audit_drawn,
                audit_rate=doc.audit_rate,
            )
        return out

    # --- labels ---------------------------------------------------------------------------
    async def add_label(
        self, policy: str, item_id: str, reviewer_id: str, label: str, at: float
    ) -> Literal["stored", "duplicate"]:
        """Store one label; the first label of (item, reviewer) under a policy wins."""
        key = self.keys.votes(policy, item_id)
        value = StoredVote(label=label, at=at).model_dump_json()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, reviewer_id, value)
            pipe.zadd(self.keys.items(policy), {item_id: at}, nx=True)
            pipe.zrem(self.keys.open_requests(policy), item_id)
            pipe.sadd(self.keys.policies, policy)
            stored, _, _, _ = await pipe.execute()
        return "stored" if stored else "duplicate"

    async def votes(self, policy: str, item_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.votes(policy, item_id))
        return {_s(r): StoredVote.model_validate_json(v).label for r, v in raw.items()}

    async def labelled_items(self, policy: str) -> list[str]:
        return [
            _s(i)  # type: ignore[arg-type]
            for i in await self.redis.zrange(self.keys.items(policy), 0, -1)
        ]

    async def labelled_since(self, policy: str, since: float) -> list[str]:
        """Items whose first label arrived after ``since`` (epoch seconds)."""
        raw = await self.redis.zrangebyscore(self.keys.items(policy), since, "+inf")
        return [_s(i) for i in raw]  # type: ignore[arg-type]

    async def all_votes(self, policy: str) -> dict[str, dict[str, str]]:
        items = await self.labelled_items(policy)
        async with self.redis.pipeline(transaction=False) as pipe:
            for item_id in items:
                pipe.hgetall(self.keys.votes(policy, item_id))
            raws = await pipe.execute()
        return {
            item_id: {_s(r): StoredVote.model_validate_json(v).label for r, v in raw.items()}
            for item_id, raw in zip(items, raws, strict=True)
        }

    async def policies(self) -> set[str]:
        """Every policy version that has labels."""
        return {_s(p) for p in await self.redis.smembers(self.keys.policies)}

    async def votes_every_policy(self) -> dict[str, dict[str, str]]:
        """Every label of every policy, keyed ``policy/item``: what reviewer agreement is
        measured on (a reviewer's reliability is theirs whatever the policy; items are only
        compared under the same policy)."""
        out = {}
        for policy in sorted(await self.policies()):
            for item_id, votes in (await self.all_votes(policy)).items():
                out[f"{policy}/{item_id}"] = votes
        return out

    async def dataset(
        self, policy: str, split: Literal["train", "eval"], *, eval_share: float = 0.4
    ) -> list[LabeledExample]:
        """Consensus-labelled items of one policy version and one split. Labels of excluded
        reviewers are left out; items without a majority are left out."""
        votes = await self.all_votes(policy)
        excluded = await self.excluded()
        chosen = [i for i in votes if split_of(i, eval_share=eval_share) == split]
        reviewed = await self.reviewed_items(chosen)
        out = []
        for item_id in chosen:
            verdict = consensus(item_id, votes[item_id], exclude=excluded)
            if verdict.label is None or item_id not in reviewed:
                continue
            out.append(
                LabeledExample(item_id, reviewed[item_id].text, verdict.label, verdict.votes)
            )
        return out
