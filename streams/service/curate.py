"""Choosing what goes to expert review, inside the classify worker (which has the embeddings).
Three sources (`adapters.curation`): items in the review band (uncertain), cross-label pairs
where the classes' clusters overlap over a sliding window (boundary, the published method), and
a random sample (audit). Candidates already requested are dropped, the shared review budget
in Redis caps how many go out, priority orders them, and each request carries as evidence the
nearest already-labelled items with their consensus labels.

The audit sample is drawn per batch (`adapters.review.window.audit_draw`: each scored item once,
with the policy's audit rate), and every request of a drawn item says so (``audit_drawn``, with
the rate), whatever reason it goes out under: the unbiased figures are computed on exactly these
items. A drawn item goes out even when the budget turned its candidate away (as a plain audit
request), so a draw is never dropped for being uncertain or busy: the audit rate is its budget."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import WatchError

from adapters.labels.consensus import consensus
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.review.budget import ReviewBudget, prioritise
from adapters.review.evidence import near_examples, nearest_labelled
from adapters.review.opinions import OVERLAP_RATE, first_opinions
from adapters.review.routing import RoutingPolicy
from adapters.review.selectors import Candidate, Reason, uncertain
from adapters.review.window import AUDIT_PRIORITY, CurationWindow, audit_draw, boundary_pairs
from models.scorer import ScoreBatch
from streams.service.ledger import ReviewLedger
from streams.wire.messages import Evidence, IncomingItem, ReviewReason, ReviewRequest

__all__ = ["Curator", "RedisReviewBudget", "review_request_id"]

log = logging.getLogger(__name__)


def review_request_id(policy_version: str, item_id: str, reason: str) -> str:
    """Deterministic, so a duplicate delivered after a crash carries the same id."""
    digest = hashlib.sha256(f"{policy_version}\x00{item_id}\x00{reason}".encode()).hexdigest()
    return f"rr-{digest[:24]}"


class RedisReviewBudget:
    """`adapters.curation.ReviewBudget` with its state in Redis, shared by every worker: one token
    bucket per reason, each with its share of the labels per hour (so a flood of uncertain items
    cannot starve boundary pairs and the audit sample), and one cap on open requests for all.
    The read-decide-write runs under WATCH, so concurrent workers never spend the same tokens."""

    def __init__(
        self,
        redis: Redis,
        store: LabelStore,
        prefix: str,
        *,
        labels_per_hour: float,
        max_open: int,
        shares: dict[str, float] | None = None,
    ) -> None:
        self.redis = redis
        self.store = store
        self.prefix = prefix
        self.labels_per_hour = labels_per_hour
        self.max_open = max_open
        self.shares = shares or {}

    async def allow(self, policy: str, wanted: int, now: float, reason: str = "all") -> int:
        if wanted <= 0:
            return 0
        share = self.shares.get(reason, 1.0)
        if share <= 0:
            return 0
        key = f"{self.prefix}:review:budget:{policy}:{reason}"
        open_requests = await self.store.open_count(policy)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    state = await pipe.hgetall(key)
                    tokens = float(state[b"tokens"]) if b"tokens" in state else None
                    updated = float(state[b"updated_at"]) if b"updated_at" in state else now
                    budget = ReviewBudget(
                        self.labels_per_hour * share,
                        self.max_open,
                        tokens=tokens,
                        updated_at=updated,
                    )
                    granted = budget.allow(wanted, open_requests=open_requests, now=now)
                    pipe.multi()
                    pipe.hset(
                        key, mapping={"tokens": budget.tokens, "updated_at": budget.updated_at}
                    )
                    await pipe.execute()
                    return granted
                except WatchError:
                    continue


class _LabelledIndex:
    """Embeddings and consensus labels of reviewed items, refreshed now and then."""

    def __init__(self, store: LabelStore, policy: str, refresh_s: float) -> None:
        self.store = store
        self.policy = policy
        self.refresh_s = refresh_s
        self.loaded_at = -1e18
        self.ids: list[str] = []
        self.embeddings = np.zeros((0, 0), dtype=np.float32)
        self.labels: list[str] = []

    async def refresh(self, now: float) -> None:
        if now - self.loaded_at < self.refresh_s:
            return
        self.loaded_at = now
        votes = await self.store.all_votes(self.policy)
        excluded = await self.store.excluded()
        reviewed = await self.store.reviewed_items(list(votes))
        ids, embs, labels = [], [], []
        for item_id, item_votes in votes.items():
            verdict = consensus(item_id, item_votes, exclude=excluded)
            item = reviewed.get(item_id)
            if verdict.label is None or item is None or item.embedding is None:
                continue
            ids.append(item_id)
            embs.append(item.embedding)
            labels.append(verdict.label)
        self.ids, self.labels = ids, labels
        self.embeddings = np.vstack(embs) if embs else np.zeros((0, 0), dtype=np.float32)


class Curator:
    def __init__(
        self,
        *,
        ledger: ReviewLedger,
        policy: RoutingPolicy,
        store: LabelStore | None = None,
        budget: RedisReviewBudget | None = None,
        window: CurationWindow | None = None,
        mine_every: int = 200,
        max_pairs: int = 8,
        audit_rate: float = 0.02,
        evidence_k: int = 3,
        seed: int = 0,
        evidence_refresh_s: float = 15.0,
        overlap_rate: float = OVERLAP_RATE,
        clock: Callable[[], float] = time.time,
        miner: Executor | None = None,
    ) -> None:
        """``miner``: where the window is mined for boundary pairs. None: inline, in the batch
        that reached ``mine_every`` (tests); an executor (the worker): in the background, on a
        snapshot of the window, the pairs joining the first batch after they are found, so no
        batch waits for the clustering (0.3 to 0.9 s over a 1,000-item window on 2 cores)."""
        self.ledger = ledger
        self.store = store
        self.budget = budget
        self.window = window
        self.mine_every = mine_every
        self.max_pairs = max_pairs
        self.audit_rate = audit_rate
        self.evidence_k = evidence_k
        self.overlap_rate = overlap_rate
        self.seed = seed
        self.clock = clock
        self.miner = miner
        self._mining: asyncio.Future[list[Candidate]] | None = None
        self._since_mined = 0
        self._minings = 0
        size = window.size if window is not None else 0
        self._recent: OrderedDict[str, tuple[str, float, np.ndarray]] = OrderedDict()
        self._recent_max = max(size, 1)
        # evidence comes from the labels of the policy the worker started with
        self._index = (
            _LabelledIndex(store, policy.version, evidence_refresh_s) if store is not None else None
        )
        self.deduplicated = 0
        self._examples: np.ndarray | None = None

    def start_transition(
        self, *, audit_rate: float | None, example_embeddings: np.ndarray | None
    ) -> None:
        """A new policy version (its routing comes with each batch): audit at its rate, and look
        for live items near its examples of what changed at every mining."""
        if audit_rate is not None:
            self.audit_rate = audit_rate
        self._examples = example_embeddings
        self._since_mined = self.mine_every  # mine at the next batch

    def _remember(self, items: Sequence[IncomingItem], batch: ScoreBatch, p: np.ndarray) -> None:
        for row, item in enumerate(items):
            self._recent[item.item_id] = (item.text, float(p[row]), batch.embeddings[row])
            self._recent.move_to_end(item.item_id)
        while len(self._recent) > max(self._recent_max, len(items)):
            self._recent.popitem(last=False)

    async def select(
        self, items: Sequence[IncomingItem], batch: ScoreBatch, now: float, policy: RoutingPolicy
    ) -> list[ReviewRequest]:
        """The review requests to send for this batch, decided under ``policy`` (not yet marked
        as sent)."""
        ids = [i.item_id for i in items]
        p = batch.violating()
        self._remember(items, batch, p)
        candidates = uncertain(ids, p, low=policy.review_low, high=policy.review_high)
        draws = audit_draw(ids, rate=self.audit_rate, seed=self.seed)
        drawn = {item_id for item_id, d in zip(ids, draws, strict=True) if d}
        candidates += [
            Candidate(item_id, Reason.AUDIT, AUDIT_PRIORITY, float(p[row]))
            for row, item_id in enumerate(ids)
            if item_id in drawn
        ]
        if self.window is not None:
            self.window.add(ids, batch.embeddings, p)
            self._since_mined += len(items)
            candidates += self._mined()
            due = self._since_mined >= self.mine_every and len(self.window) >= 4
            if due and self._mining is None:
                self._since_mined = 0
                self._minings += 1
                snapshot = self.window.snapshot()
                seed, examples = self.seed + self._minings, self._examples
                if self.miner is None:
                    candidates += self._mine(snapshot, seed, examples)
                else:
                    self._mining = asyncio.get_running_loop().run_in_executor(
                        self.miner, self._mine, snapshot, seed, examples
                    )
        candidates = [c for c in prioritise(candidates) if c.item_id in self._recent]
        if not candidates:
            return []
        seen = await self.ledger.already_requested(policy.version, [c.item_id for c in candidates])
        before = frozenset(c.item_id for c, s in zip(candidates, seen, strict=True) if s)
        fresh = [c for c in candidates if c.item_id not in before]
        self.deduplicated += len(candidates) - len(fresh)
        fresh = _keep_pairs_whole(fresh, before)
        if self.budget is not None and fresh:
            allowed: list[Candidate] = []
            for reason in dict.fromkeys(c.reason for c in fresh):  # in priority order
                group = [c for c in fresh if c.reason == reason]
                granted = await self.budget.allow(
                    policy.version, len(group), now, reason=reason.value
                )
                allowed += _keep_pairs_whole(group[:granted], before)
            kept = {c.item_id for c in allowed}
            allowed += [
                Candidate(c.item_id, Reason.AUDIT, AUDIT_PRIORITY, c.p_violating)
                for c in fresh
                if c.item_id in drawn and c.item_id not in kept
            ]
            fresh = prioritise(allowed)
        return await self._requests(fresh, now, policy.version, drawn)

    def _mine(
        self,
        snapshot: tuple[list[str], np.ndarray, np.ndarray],
        seed: int,
        examples: np.ndarray | None,
    ) -> list[Candidate]:
        """Boundary pairs over a snapshot of the window, and its items nearest the new policy's
        examples (the audit is drawn per batch, in `select`). No I/O: safe on another thread."""
        ids, x, p = snapshot
        found = boundary_pairs(ids, x, p, max_pairs=self.max_pairs, seed=seed)
        if examples is not None:
            found += near_examples(ids, x, p, examples, budget=2 * self.max_pairs)
        return found

    def _mined(self) -> list[Candidate]:
        """What the background mining found, once it has finished (a failure is logged, and
        the next mining is due at once)."""
        future = self._mining
        if future is None or not future.done():
            return []
        self._mining = None
        try:
            return future.result()
        except Exception as exc:
            log.warning("mining the window failed: %r", exc)
            self._since_mined = self.mine_every
            return []

    async def _requests(
        self, chosen: list[Candidate], now: float, policy_version: str, drawn: set[str]
    ) -> list[ReviewRequest]:
        evidence: list[list[Any]] = [[] for _ in chosen]
        if self._index is not None and self.evidence_k and chosen:
            await self._index.refresh(now)
            if self._index.ids:
                queries = np.vstack([self._recent[c.item_id][2] for c in chosen])
                evidence = nearest_labelled(
                    queries,
                    self._index.ids,
                    self._index.embeddings,
                    self._index.labels,
                    k=self.evidence_k,
                )
        out = []
        for c, ev in zip(chosen, evidence, strict=True):
            text, p, _emb = self._recent[c.item_id]
            reason = ReviewReason(c.reason.value)
            out.append(
                ReviewRequest(
                    request_id=review_request_id(policy_version, c.item_id, reason),
                    item_id=c.item_id,
                    text=text,
                    reason=reason,
                    probabilities={"violating": round(p, 6)},
                    policy_version=policy_version,
                    priority=round(float(c.priority), 6),
                    pair_item_id=c.pair_item_id,
                    evidence=[
                        Evidence(
                            item_id=e.item_id, label=e.label, similarity=round(e.similarity, 4)
                        )
                        for e in ev
                        if e.item_id != c.item_id
                    ],
                    requested_at=now,
                    audit_drawn=c.item_id in drawn,
                    audit_rate=self.audit_rate,
                    opinions=first_opinions(
                        c.item_id,
                        audit_drawn=c.item_id in drawn,
                        overlap_rate=self.overlap_rate,
                        seed=self.seed,
                    ),
                )
            )
        return out

    async def commit(self, requests: Sequence[ReviewRequest]) -> None:
        """After delivery: remember them as requested under their policy, and keep what labels
        need later."""
        by_policy: dict[str, list[ReviewRequest]] = {}
        for r in requests:
            by_policy.setdefault(r.policy_version, []).append(r)
        for policy_version, group in by_policy.items():
            await self._commit(policy_version, group)

    async def _commit(self, policy_version: str, requests: list[ReviewRequest]) -> None:
        await self.ledger.mark_requested(policy_version, [r.item_id for r in requests])
        if self.store is not None:
            await self.store.record_requests(
                policy_version,
                [
                    ReviewedItem(
                        item_id=r.item_id,
                        text=r.text,
                        embedding=self._recent[r.item_id][2] if r.item_id in self._recent else None,
                        p_violating=r.probabilities.get("violating", 0.0),
                        reason=r.reason.value,
                        requested_at=r.requested_at,
                        request_id=r.request_id,
                        policy_version=r.policy_version,
                        audit_drawn=r.audit_drawn,
                        audit_rate=r.audit_rate,
                    )
                    for r in requests
                ],
            )


def _keep_pairs_whole(
    candidates: list[Candidate], requested: frozenset[str] = frozenset()
) -> list[Candidate]:
    """Drop a boundary candidate whose partner is neither in the list nor ``requested`` before
    under the policy: a pair is labelled as a pair. A member whose partner went out before (as
    uncertain, say) stays: the partner's labels are coming, and this one completes the pair."""
    present = {c.item_id for c in candidates} | requested
    return [c for c in candidates if c.pair_item_id is None or c.pair_item_id in present]
