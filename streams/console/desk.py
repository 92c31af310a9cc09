"""What a reviewer can do, for the pages and the API alike: take the next task, label it, skip
it, release it, undo the last label. Every state change is audit-logged; the label's reviewer is
always the signed-in user, never a value the client sent. A reviewer the agreement check
excluded is given no task until a lead clears them: their labels would count for nothing, and
each item they took would cost a trusted opinion more."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum

from redis.asyncio.client import Pipeline

from adapters.policy.schema import Category, Policy
from adapters.policy.store import PolicyStore
from models.errors import BorderlineError
from streams.console.audit import AuditLog
from streams.console.metrics import ConsoleMetrics
from streams.console.outbox import LabelOutbox
from streams.console.queue import ClaimedTask, TaskQueue
from streams.wire.messages import ReviewLabel

__all__ = ["BENIGN", "ExclusionView", "LabelOutcome", "PolicyView", "ReviewDesk", "hotkeys"]

BENIGN = "benign"


def hotkeys(categories: list[str], keys: str = "") -> list[tuple[str, str]]:
    """The key of each answer: benign first, then the policy's categories in order. ``keys``
    (``BORDERLINE_CONSOLE__HOTKEYS``, distinct characters) gives them in that order; answers
    beyond it, or all by default, get the digits ``1``... not already taken (nine keys at most;
    further answers are reached with the mouse or the API).

    >>> hotkeys(["violating"])
    [('1', 'benign'), ('2', 'violating')]
    >>> hotkeys(["spam", "scam", "hate"], keys="jk")
    [('j', 'benign'), ('k', 'spam'), ('1', 'scam'), ('2', 'hate')]
    """
    chosen = list(dict.fromkeys(keys))
    spare = [d for d in "123456789" if d not in chosen]
    pool = (chosen + spare)[:9]
    return list(zip(pool, [BENIGN, *categories], strict=False))


class LabelOutcome(StrEnum):
    ACCEPTED = "accepted"
    NOT_HELD = "not_held"  # no live lease of this reviewer on the item (expired, or answered)
    UNKNOWN_LABEL = "unknown_label"


@dataclass(frozen=True)
class ShownPolicy:
    version: str
    description: str
    categories: list[Category]
    examples: list[tuple[str, str]]


@dataclass
class PolicyView:
    """The active policy as reviewers see it; the settings' single category where no policy was
    ever published."""

    store: PolicyStore
    fallback_version: str
    fallback_category: str
    refresh_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, ShownPolicy] = field(default_factory=dict)
    _active: tuple[float, str] | None = None

    async def active_version(self) -> str:
        """The active policy's version, read from Redis at most every ``refresh_s`` (every
        request needs it; a newly published policy is served within that time)."""
        now = self.clock()
        if self._active is not None and now - self._active[0] < self.refresh_s:
            return self._active[1]
        version = await self.store.active_version() or self.fallback_version
        self._active = (now, version)
        return version

    async def shown(self, version: str) -> ShownPolicy:
        if version in self._cache:
            return self._cache[version]
        try:
            policy: Policy | None = await self.store.get(version)
        except BorderlineError:
            policy = None
        if policy is None:
            fallback = Category(
                name=self.fallback_category,
                definition="the policy's category (no policy document was published)",
                block_threshold=0.5,
            )
            shown = ShownPolicy(version, "", [fallback], [])
        else:
            shown = ShownPolicy(
                version,
                policy.description,
                list(policy.categories),
                [(e.text, e.label) for e in policy.examples],
            )
        self._cache[version] = shown  # a published version never changes
        return shown


@dataclass
class ExclusionView:
    """Who the agreement check excluded (``read``: `LabelStore.excluded`), read from Redis at
    most every ``refresh_s``: a claim needs it, and an exclusion or a lead's override is seen
    within that time."""

    read: Callable[[], Awaitable[Collection[str]]]
    refresh_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _seen: tuple[float, frozenset[str]] | None = None

    async def holds(self, reviewer: str) -> bool:
        now = self.clock()
        if self._seen is None or now - self._seen[0] >= self.refresh_s:
            self._seen = (now, frozenset(await self.read()))
        return reviewer in self._seen[1]


@dataclass
class ReviewDesk:
    queue: TaskQueue
    outbox: LabelOutbox
    audit: AuditLog
    policies: PolicyView
    metrics: ConsoleMetrics
    clock: Callable[[], float] = time.time
    keys: str = ""  # the answer keys (`hotkeys`)
    exclusions: ExclusionView | None = None  # None: nobody is held back

    async def _note(self, actor: str, action: str, target: str, detail: str = "") -> None:
        await self.audit.append(actor, action, target, now=self.clock(), detail=detail)
        self.metrics.actions.labels(action=action).inc()

    async def excluded(self, reviewer: str) -> bool:
        """Whether the agreement check excluded ``reviewer`` (no tasks for them)."""
        return self.exclusions is not None and await self.exclusions.holds(reviewer)

    async def next(self, reviewer: str) -> ClaimedTask | None:
        """The reviewer's task (the one they hold, or the next they may take); None when the
        queue has none for them, or they are excluded."""
        if await self.excluded(reviewer):
            return None
        policy = await self.policies.active_version()
        task = await self.queue.claim(policy, reviewer, now=self.clock())
        if task is not None and task.fresh:
            await self._note(reviewer, "claim", task.request.item_id)
        return task

    async def label(self, reviewer: str, item_id: str, label: str) -> LabelOutcome:
        """Answer the reviewer's task ``item_id`` with ``label`` (three round trips with the
        sign-in check: the answer, then the label and its audit entry in one transaction)."""
        policy = await self.policies.active_version()
        shown = await self.policies.shown(policy)  # the queue holds this version's requests
        if label != BENIGN and label not in {c.name for c in shown.categories}:
            return LabelOutcome.UNKNOWN_LABEL
        now = self.clock()
        request = await self.queue.finish(policy, item_id, reviewer, now=now)
        if request is None:
            return LabelOutcome.NOT_HELD
        answer = ReviewLabel(
            item_id=item_id,
            reviewer_id=reviewer,
            label=label,
            policy_version=request.policy_version,
            request_id=request.request_id,
            labeled_at=now,
        )

        def audited(pipe: Pipeline) -> None:
            self.audit.append_in(pipe, reviewer, "label", item_id, now=now, detail=label)

        await self.outbox.put(answer, now=now, also=audited)
        self.metrics.actions.labels(action="label").inc()
        return LabelOutcome.ACCEPTED

    async def skip(self, reviewer: str, item_id: str) -> bool:
        policy = await self.policies.active_version()
        done = await self.queue.release(policy, item_id, reviewer, skip=True)
        if done:
            await self._note(reviewer, "skip", item_id)
        return done

    async def release(self, reviewer: str, item_id: str) -> bool:
        policy = await self.policies.active_version()
        done = await self.queue.release(policy, item_id, reviewer)
        if done:
            await self._note(reviewer, "release", item_id)
        return done

    async def undo(self, reviewer: str) -> ReviewLabel | None:
        """Take back the reviewer's last label while it waits; it is their task again."""
        label = await self.outbox.undo(reviewer)
        if label is None:
            return None
        await self.queue.reopen(label.policy_version, label.item_id, reviewer, now=self.clock())
        await self._note(reviewer, "undo", label.item_id, label.label)
        return label
