"""The label collector, one batch at a time: decode expert labels (bad ones, labels from
unregistered reviewers and labels the admission refuses — unsigned, not answering a request the
service issued, another policy version, an unknown category, a time in the future, see
`streams.service.admission` — become dead letters with their reason; one whose check fails any
other way, twice, is dead-lettered alone as ``poison``), store each (item,
reviewer) once, send items whose labels disagree out for another opinion, and every so often
recompute reviewer agreement and which reviewers are excluded from training. When an item's
consensus settles, it tells the drift watch whether the model's verdict under that item's policy
(its block threshold, from `Routings`) disagreed with the experts. Like `Classifier`, it depends
only on small interfaces and returns after every output was delivered."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from adapters.labels.agreement import expert_ceiling
from adapters.labels.consensus import consensus, counted_votes, needs_another_opinion
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.labels.trust import MIN_PANEL, trusted_panel
from adapters.registry.store import AdapterRegistry
from adapters.review.opinions import (
    OVERLAP_RATE,
    first_opinions,
    model_decision,
    second_opinion_why,
)
from adapters.review.routing import RoutingPolicy
from streams.service.admission import Admission
from streams.service.metrics import Metrics
from streams.service.outbox import RawRecord, Sink, dead_letter, dead_letter_output, deliver
from streams.service.rebuild import StoreGuard
from streams.service.retry import InfrastructureError, Retrying, RetryPolicy, is_infrastructure
from streams.wire.errors import MessageError
from streams.wire.messages import (
    DeadLetter,
    ReviewLabel,
    ReviewReason,
    ReviewRequest,
    decode,
    encode,
)
from streams.wire.topics import TopicNames

__all__ = ["CollectResult", "Collector", "Routings"]

log = logging.getLogger(__name__)


class Routings(Protocol):
    """The routing a policy version decides with (`streams.service.control.PolicyRoutings`)."""

    async def routing(self, policy_version: str) -> RoutingPolicy: ...


@dataclass
class CollectResult:
    stored: list[ReviewLabel] = field(default_factory=list)
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    second_opinions: list[ReviewRequest] = field(default_factory=list)
    second_opinion_why: Counter[str] = field(default_factory=Counter)  # why each was asked


class Collector:
    def __init__(
        self,
        *,
        store: LabelStore,
        admission: Admission,
        routings: Routings,
        sink: Sink,
        metrics: Metrics,
        topics: TopicNames,
        worker: str,
        agreement_threshold: float = 0.8,
        min_shared: int = 10,
        min_panel: int = MIN_PANEL,
        trust_confidence: float = 0.95,
        recompute_every: int = 50,
        retry_attempts: int = 5,
        retry_backoff_s: float = 0.2,
        clock: Callable[[], float] = time.time,
        on_feedback: Callable[[list[bool]], Awaitable[None]] | None = None,
        retry: Retrying | None = None,
        guard: StoreGuard | None = None,
        overlap_rate: float = OVERLAP_RATE,
        seed: int = 0,
        registry: AdapterRegistry | None = None,
    ) -> None:
        """``admission``: what a label must satisfy to be stored (`LabelAdmission`).
        ``retry``: the process's retry policy (`streams.service.retry`); without one, a call
        is tried ``retry_attempts`` times, backing off from ``retry_backoff_s`` (tests).
        ``registry``: which policies have an adapter promoted under them; a single opinion is
        checked against the model's decision only there (None: everywhere)."""
        self.store = store
        self.admission = admission
        self.routings = routings
        self.sink = sink
        self.metrics = metrics
        self.topics = topics
        self.worker = worker
        self.agreement_threshold = agreement_threshold
        self.min_shared = min_shared
        self.min_panel = min_panel
        self.trust_confidence = trust_confidence
        self.recompute_every = recompute_every
        self._retry = retry or Retrying(
            RetryPolicy(attempts=retry_attempts, base_s=retry_backoff_s), metrics=metrics
        )
        self.clock = clock
        self._since_recompute = 0
        self.on_feedback = on_feedback
        self._settled: set[tuple[str, str]] = set()
        self.guard = guard
        self.overlap_rate = overlap_rate  # the curator's: which requests asked for two
        self.seed = seed
        self.registry = registry
        self.history: Counter[str] = Counter()  # labels per reviewer, recounted at recompute

    async def handle(self, records: Sequence[RawRecord]) -> CollectResult:
        await self._ensure_store()
        result = CollectResult()
        registered: set[str] = await self._retry("redis", self.store.registered)
        touched: dict[tuple[str, str], ReviewLabel] = {}
        for record in records:
            label = await self._admitted(record, registered)
            if isinstance(label, MessageError):
                result.dead_letters.append(
                    dead_letter(record, label, worker=self.worker, now=self.clock())
                )
                continue
            outcome = await self._retry(
                "redis",
                partial(
                    self.store.add_label,
                    label.policy_version,
                    label.item_id,
                    label.reviewer_id,
                    label.label,
                    label.labeled_at,
                ),
            )
            if outcome == "stored":
                self.history[label.reviewer_id] += 1
                result.stored.append(label)
                touched[(label.policy_version, label.item_id)] = label
            else:
                result.duplicates += 1
        if touched:
            result.second_opinions = await self._second_opinions(touched, result.second_opinion_why)
            if self.on_feedback is not None:
                await self.on_feedback(await self._disagreements(touched))
        await self._deliver(result)
        self._count(result)
        self._since_recompute += len(result.stored)
        if self._since_recompute >= self.recompute_every:
            self._since_recompute = 0
            await self._retry("redis", self.recompute)  # recomputed from scratch: idempotent
        return result

    async def _admitted(
        self, record: RawRecord, registered: set[str]
    ) -> ReviewLabel | MessageError:
        """The record's label, or why it is refused. Anything else that fails on one record's
        content (a bug meeting a hostile value, e.g. a number of 5,000 digits that `json`
        refuses with a ValueError) is tried once more, then that record alone is dead-lettered
        as ``poison``: the rest of its batch is stored, and no record can crash-loop the
        collector. Broker and Redis failures are not the record's: they propagate."""
        for attempt in (1, 2):
            try:
                return await self._admit(record, registered)
            except MessageError as exc:
                return exc
            except (InfrastructureError, asyncio.CancelledError):
                raise
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                if attempt == 2:
                    log.error(
                        "label %s[%s]@%s failed twice, dead-lettered as poison: %r",
                        record.topic,
                        record.partition,
                        record.offset,
                        exc,
                    )
                    return MessageError("poison", f"processing failed twice: {exc!r}")
        raise AssertionError("unreachable")

    async def _admit(self, record: RawRecord, registered: set[str]) -> ReviewLabel:
        label = decode(record.value, ReviewLabel)
        if label.reviewer_id not in registered:
            raise MessageError(
                "unregistered_reviewer",
                f"reviewer {label.reviewer_id!r} is not registered (borderline reviewers add ID)",
            )
        refused = await self._refusal(label)
        if refused is not None:
            raise refused
        return label

    async def _refusal(self, label: ReviewLabel) -> MessageError | None:
        """The admission's answer. A refusal is asked again after the store guard looked: one
        read from a Redis that came back empty in the middle of the batch (no keys, no
        requests yet) is rebuilt first, not dead-lettered."""
        ask = partial(self.admission.refusal, label, now=self.clock())
        refused: MessageError | None = await self._retry("redis", ask)
        if refused is not None and self.guard is not None:
            await self._ensure_store()
            refused = await self._retry("redis", ask)
        return refused

    async def _ensure_store(self) -> None:
        """Before storing labels: a store that is not marked complete (Redis restarted empty,
        or an older store) is rebuilt from the record first (`streams.service.rebuild`)."""
        if self.guard is not None:
            await self._retry("redis", self.guard.ensure)

    async def _second_opinions(
        self, touched: dict[tuple[str, str], ReviewLabel], whys: Counter[str]
    ) -> list[ReviewRequest]:
        """One more opinion for each touched item that needs one; ``whys`` counts why."""
        excluded: set[str] = await self._retry("redis", self.store.excluded)
        out = []
        for (policy, item_id), _label in touched.items():
            votes: dict[str, str] = await self._retry(
                "redis", partial(self.store.votes, policy, item_id)
            )
            disagree = needs_another_opinion(votes, exclude=excluded)
            if not disagree and len(votes) != 1:
                continue
            reviewed = await self._retry("redis", partial(self.store.reviewed_items, [item_id]))
            item = reviewed.get(item_id)
            if item is None:
                continue  # not requested through borderline: nothing to show a reviewer
            if disagree:
                why: str | None = "split" if counted_votes(votes, excluded) else "untrusted"
            else:
                why = await self._check_single(policy, item_id, item, votes, excluded)
            if why is None:
                continue
            whys[why] += 1
            digest = hashlib.sha256(
                f"{policy}\x00{item_id}\x00second\x00{len(votes)}".encode()
            ).hexdigest()
            request_id = f"rr-{digest[:24]}"
            # recorded before it is sent: the labels answering it are admitted
            await self._retry(
                "redis", partial(self.store.record_asked, item_id, request_id, policy)
            )
            out.append(
                ReviewRequest(
                    request_id=request_id,
                    item_id=item_id,
                    text=item.text,
                    reason=ReviewReason.SECOND_OPINION,
                    probabilities={"violating": round(item.p_violating, 6)},
                    policy_version=policy,
                    priority=0.95,  # disagreement on a label already paid for: settle it first
                    requested_at=self.clock(),
                    already_labeled_by=sorted(votes),
                )
            )
        return out

    async def _check_single(
        self,
        policy: str,
        item_id: str,
        item: ReviewedItem,
        votes: dict[str, str],
        excluded: set[str],
    ) -> str | None:
        """One opinion on an item whose request asked for one: why it needs a second (it
        disagrees with the model's decision, or its reviewer is new), None when it does not
        (`adapters.review.opinions.second_opinion_why`). Under a
        policy no adapter was promoted for yet, the serving adapter was trained for other rules:
        its decision is no check on a reviewer."""
        wanted = first_opinions(
            item_id, audit_drawn=item.audit_drawn, overlap_rate=self.overlap_rate, seed=self.seed
        )
        if wanted > 1:
            return None  # its other opinions were asked for with the request
        routing = await self._retry("redis", partial(self.routings.routing, policy))
        model = model_decision(item.p_violating, routing)
        if model is not None and self.registry is not None:
            active = await self._retry("redis", partial(self.registry.active, policy))
            model = model if active is not None else None
        return second_opinion_why(votes, model_label=model, history=self.history, exclude=excluded)

    async def _disagreements(self, touched: dict[tuple[str, str], ReviewLabel]) -> list[bool]:
        """For items whose consensus just settled: did the model's decision disagree with it?"""
        excluded: set[str] = await self._retry("redis", self.store.excluded)
        fresh = [key for key in touched if key not in self._settled]
        out = []
        for policy, item_id in fresh:
            votes = await self._retry("redis", partial(self.store.votes, policy, item_id))
            verdict = consensus(item_id, votes, exclude=excluded)
            if verdict.label is None or verdict.votes < 2:
                continue
            reviewed = (
                await self._retry("redis", partial(self.store.reviewed_items, [item_id]))
            ).get(item_id)
            if reviewed is None:
                continue
            routing = await self._retry("redis", partial(self.routings.routing, policy))
            self._settled.add((policy, item_id))
            model = "violating" if routing.blocks(reviewed.p_violating) else "benign"
            out.append(model != verdict.label)
        return out

    async def recompute(self) -> set[str]:
        """Reviewer agreement over every label of every policy (items compared under the same
        policy only); store who is excluded. One set for all policies: measured per policy,
        the last policy measured would overwrite the others' verdict."""
        votes = await self.store.votes_every_policy()
        self.history = Counter(r for item in votes.values() for r in item)
        cleared = await self.store.cleared()
        # peel off the worst reviewer evidently below the threshold and recompute, until none
        # is: a random reviewer drags the consensus others are measured against (trust.py)
        trust = trusted_panel(
            votes,
            threshold=self.agreement_threshold,
            cleared=cleared,
            min_shared=self.min_shared,
            min_panel=self.min_panel,
            confidence=self.trust_confidence,
        )
        excluded = set(trust.excluded)
        await self.store.set_excluded(excluded)
        for r in trust.reviewers:  # each against the consensus of the trusted others
            value = r.kappa if r.kappa is not None else r.agreement
            if value is not None:
                self.metrics.reviewer_agreement.labels(reviewer=r.reviewer).set(value)
        self.metrics.reviewers_excluded.set(len(excluded))
        self.metrics.reviewer_panel.set(trust.panel)
        self.metrics.reviewer_panel_short.set(1 if trust.short else 0)
        ceiling = expert_ceiling(votes, excluded, min_shared=self.min_shared)
        if ceiling is not None:
            self.metrics.expert_pairwise_kappa.set(ceiling)
        return excluded

    async def _deliver(self, result: CollectResult) -> None:
        outgoing = [
            (self.topics.review_requests, r.item_id.encode(), encode(r))
            for r in result.second_opinions
        ]
        outgoing += [dead_letter_output(dl) for dl in result.dead_letters]
        await deliver(self.sink, outgoing, self._retry)

    def _count(self, result: CollectResult) -> None:
        m = self.metrics
        if result.stored:
            m.labels.labels(result="stored").inc(len(result.stored))
        if result.duplicates:
            m.labels.labels(result="duplicate").inc(result.duplicates)
        for dl in result.dead_letters:
            m.labels.labels(result=dl.reason).inc()
            m.dead_letters.labels(topic=dl.source_topic, reason=dl.reason).inc()
        for r in result.second_opinions:
            m.review_requests.labels(reason=r.reason.value).inc()
        for why, n in result.second_opinion_why.items():
            m.second_opinions.labels(why=why).inc(n)
