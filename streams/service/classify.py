"""The classify step, one batch at a time: decode every record (bad ones become dead letters with
their reason and original bytes), score the good ones off the event loop, route each, and produce
one decision per item plus a review request for items in the review band that were not requested
before. Every output is delivered before the batch returns, so the agent acks only what is done.

What a batch is decided with (policy, routing, adapter) is one frozen `ServingState`, read once
when the batch starts; the control plane (`streams.service.control`) replaces it through
`Classifier.apply`, which checks that the worker can serve it and swaps it with one reference
assignment, so a batch in flight keeps the state it started with.

It depends only on small interfaces (`Sink`, `ReviewLedger`, a `ServingModel`), so it is tested
without Kafka; the faust agent in `streams.service.app` is a thin loop around `Classifier.handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from adapters.review.routing import route
from adapters.review.window import audit_draw
from models.errors import BorderlineError
from models.scorer import ScoreBatch
from streams.service.curate import Curator
from streams.service.metrics import Metrics
from streams.service.outbox import RawRecord, Sink, dead_letter, dead_letter_output, deliver
from streams.service.retry import InfrastructureError, Retrying, RetryPolicy
from streams.service.serving import ServingState
from streams.service.shared_cache import CachedScores, DecisionCache, TwinLedger
from streams.wire.errors import MessageError
from streams.wire.messages import (
    DeadLetter,
    Decision,
    IncomingItem,
    ReviewRequest,
    decode_item,
    encode,
)
from streams.wire.topics import TopicNames

__all__ = [
    "BatchResult",
    "Classifier",
    "ServingError",
    "ServingModel",
    "SwapGate",
    "TokeniseAhead",
]

log = logging.getLogger(__name__)


class ServingError(BorderlineError):
    """A serving state this worker cannot serve (see `Classifier.apply`)."""


class ServingModel(Protocol):
    """What the classifier needs of the scorer (`models.scorer.Scorer`): which adapters are loaded
    (each one fetched, verified for this base model and fitted to its graph before it was), and
    scoring with a named one."""

    model_version: str

    @property
    def loaded_adapters(self) -> list[str]: ...

    def activate(self, adapter_id: str) -> None: ...

    def score(self, texts: Sequence[str], adapter_id: str | None = None) -> ScoreBatch: ...


class SwapGate:
    """Closed by the control plane from the moment it knows the adapter changes until the switch
    (fetch, verify, load: a few milliseconds). A batch about to start waits while it is closed,
    at most ``wait_s``, so the batch after the one in flight is decided on the new adapter
    rather than one more batch on the old one; a slow fetch never holds the stream longer."""

    def __init__(self, wait_s: float = 0.25) -> None:
        self.wait_s = wait_s
        self._open = asyncio.Event()
        self._open.set()

    @contextlib.contextmanager
    def closed(self) -> Iterator[None]:
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    async def passed(self) -> None:
        if self._open.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._open.wait(), self.wait_s)


class Pretokeniser(Protocol):
    """What `TokeniseAhead` needs of the scorer (`models.scorer.Scorer.pretokenise`)."""

    def pretokenise(self, texts: Sequence[str]) -> None: ...


AHEAD_PENDING = 64
"""Texts waiting for the tokenise-ahead thread, at most; past that a text is tokenised with its
batch, so a flood of records never queues work without bound."""


class TokeniseAhead:
    """Tokenises each item's text as it is read into the next batch (`take_ahead`), on a thread
    of its own, while the scorer thread scores the batch in flight; `Scorer.encode` then takes
    the ids instead of tokenising on the scorer thread (tokenising: 4-6% of a scoring step).

    A peek, never a decision: a record that does not parse, has no text, or is over
    ``max_bytes`` is left alone here, and its batch dead-letters it with its reason as before.
    Called on the event loop, once per record (the agent's stream processor)."""

    def __init__(
        self, model: Pretokeniser, *, max_bytes: int, pool: Executor | None = None
    ) -> None:
        self.model = model
        self.max_bytes = max_bytes
        self.pool = pool or ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenise")
        self._pending = 0
        self._lock = threading.Lock()
        self.submitted = 0

    def __call__(self, value: object) -> None:
        if not isinstance(value, bytes | bytearray) or len(value) > self.max_bytes:
            return
        with self._lock:
            if self._pending >= AHEAD_PENDING:
                return
            self._pending += 1
        try:
            doc = json.loads(value)
            text = doc.get("text") if isinstance(doc, dict) else None
            if not isinstance(text, str) or not text.strip():
                self._done(None)
                return
            self.pool.submit(self.model.pretokenise, [text]).add_done_callback(self._done)
            self.submitted += 1
        except Exception:  # malformed: its batch says why; a pool shut down: the batch tokenises
            self._done(None)

    def _done(self, _: Future[None] | None) -> None:
        with self._lock:
            self._pending -= 1


@dataclass
class BatchResult:
    decisions: list[Decision] = field(default_factory=list)
    review_requests: list[ReviewRequest] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    deduplicated: int = 0


class Classifier:
    def __init__(
        self,
        *,
        model: ServingModel,
        executor: Executor | None,
        sink: Sink,
        curator: Curator,
        metrics: Metrics,
        topics: TopicNames,
        state: ServingState,
        worker: str,
        max_text_bytes: int,
        retry_attempts: int = 5,
        retry_backoff_s: float = 0.2,
        clock: Callable[[], float] = time.time,
        on_scored: Callable[[ScoreBatch], Awaitable[None]] | None = None,
        retry: Retrying | None = None,
        cache: DecisionCache | None = None,
        twins: TwinLedger | None = None,
    ) -> None:
        """``retry``: the process's retry policy (`streams.service.retry`); without one, a call
        is tried ``retry_attempts`` times, backing off from ``retry_backoff_s`` (tests).
        ``cache``: the decision cache (None: every item is scored); ``twins``: the curator's
        ledger, told which cached items may be left out of review for their text."""
        self.model = model
        self.executor = executor
        self.sink = sink
        self.curator = curator
        self.metrics = metrics
        self.topics = topics
        self._state = state
        self.worker = worker
        self.max_text_bytes = max_text_bytes
        self._retry = retry or Retrying(
            RetryPolicy(attempts=retry_attempts, base_s=retry_backoff_s), metrics=metrics
        )
        self.clock = clock
        self.on_scored = on_scored
        self.cache = cache
        self.twins = twins
        self.gate = SwapGate()  # the control plane closes it while it switches adapters

    @property
    def state(self) -> ServingState:
        """What the next batch is decided with."""
        return self._state

    def apply(self, state: ServingState) -> None:
        """Serve ``state`` from the next batch on. Refused with `ServingError`, changing nothing:
        an adapter that is not loaded (the control plane loads one only after the registry
        verified it for this base model), or, under the same policy, an older registry epoch than
        the one serving. A new policy version starts its transition in the curator."""
        current = self._state
        if state.adapter_id not in self.model.loaded_adapters:
            raise ServingError(
                f"adapter {state.adapter_id!r} is not loaded on model {self.model.model_version}"
            )
        if state.policy_version == current.policy_version and state.epoch < current.epoch:
            raise ServingError(
                f"epoch {state.epoch} of adapter {state.adapter_id!r} is older than epoch "
                f"{current.epoch} serving policy {current.policy_version}"
            )
        if state.policy_version != current.policy_version:
            examples = list(state.examples)
            self.curator.start_transition(
                audit_rate=state.audit_rate,
                example_embeddings=(
                    self.model.score(examples, state.adapter_id).embeddings if examples else None
                ),
            )
        self._state = state  # the swap: one reference, read once per batch
        self.model.activate(state.adapter_id)  # shadow scoring and the model_info name agree

    def _decode(self, records: Sequence[RawRecord]) -> tuple[list[IncomingItem], list[DeadLetter]]:
        items, dead = [], []
        for record in records:
            try:
                items.append(decode_item(record.value, self.max_text_bytes))
            except MessageError as exc:
                dead.append(dead_letter(record, exc, worker=self.worker, now=self.clock()))
        return items, dead

    async def _score(self, texts: list[str], adapter_id: str) -> tuple[ScoreBatch, float]:
        started = time.perf_counter()
        if self.executor is None:
            batch = self.model.score(texts, adapter_id)
        else:
            loop = asyncio.get_running_loop()
            batch = await loop.run_in_executor(self.executor, self.model.score, texts, adapter_id)
        return batch, time.perf_counter() - started

    async def _scores(self, texts: list[str], state: ServingState) -> CachedScores:
        """The batch's scores: from the cache where it holds them, else from the model."""
        adapter_id = state.adapter_id
        if self.cache is None:
            batch, scoring_s = await self._score(texts, adapter_id)
            return CachedScores(batch, scoring_s, [False] * len(texts), [])
        return await self.cache.scores(
            texts,
            model=self.model.model_version,
            adapter=adapter_id,
            policy=state.policy_version,
            score=lambda chosen: self._score(chosen, adapter_id),
        )

    def _expect_twins(self, items: list[IncomingItem], scores: CachedScores) -> None:
        """Tell the review ledger which cached items may stay out of review because their text
        already went: never an audit draw (its sample must stay random)."""
        if self.twins is None or not scores.hashes:
            return
        ids = [i.item_id for i in items]
        drawn = audit_draw(ids, rate=self.curator.audit_rate, seed=self.curator.seed)
        self.twins.expect(
            dict(zip(ids, scores.hashes, strict=True)),
            {
                item_id
                for item_id, cached, draw in zip(ids, scores.cached, drawn, strict=True)
                if cached and not draw
            },
        )

    async def handle(self, records: Sequence[RawRecord]) -> BatchResult:
        """Process one batch end to end; returns only after every output was delivered.

        Only the broker or Redis may end the worker (`InfrastructureError`, after retries). Any
        other failure is about the content of some record: the batch is processed again one
        record at a time, and a record that fails a second time is dead-lettered as ``poison``
        with the error, so no single message can stall a partition."""
        try:
            return await self._handle(records)
        except (InfrastructureError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if len(records) == 1:
                return await self._poison(records[0], exc)
            log.warning("batch of %d failed (%r); isolating its records", len(records), exc)
        result = BatchResult()
        for record in records:
            try:
                one = await self._handle([record])
            except (InfrastructureError, asyncio.CancelledError):
                raise
            except Exception as exc:
                one = await self._poison(record, exc)
            result.decisions += one.decisions
            result.review_requests += one.review_requests
            result.dead_letters += one.dead_letters
            result.deduplicated += one.deduplicated
        return result

    async def _poison(self, record: RawRecord, exc: Exception) -> BatchResult:
        """Dead-letter a record that failed twice (its batch, then alone)."""
        log.error(
            "record %s[%s]@%s failed twice, dead-lettered as poison: %r",
            record.topic,
            record.partition,
            record.offset,
            exc,
        )
        error = MessageError("poison", f"processing failed twice: {exc!r}")
        result = BatchResult(
            dead_letters=[dead_letter(record, error, worker=self.worker, now=self.clock())]
        )
        await self._deliver(result)
        self._count(result)
        return result

    async def _handle(self, records: Sequence[RawRecord]) -> BatchResult:
        result = BatchResult()
        items, result.dead_letters = self._decode(records)
        await self.gate.passed()  # an adapter being switched in is waited for, briefly
        state = self._state  # the whole batch is decided with this one
        policy = state.routing
        if items:
            scores = await self._scores([i.text for i in items], state)
            batch, scoring_s = scores.batch, scores.scoring_s
            now = self.clock()
            violating = batch.violating()
            for row, item in enumerate(items):
                p = float(violating[row])
                action = route(p, policy)
                probabilities = batch.category_probabilities(row)
                latency = None if item.produced_at is None else max(0.0, now - item.produced_at)
                result.decisions.append(
                    Decision(
                        item_id=item.item_id,
                        action=action,
                        probabilities=probabilities,
                        model_version=self.model.model_version,
                        adapter_version=batch.adapter_id,
                        policy_version=policy.version,
                        latency_s=latency,
                        scoring_s=0.0 if scores.cached[row] else round(scoring_s, 6),
                        decided_at=now,
                        worker=self.worker,
                        cached=scores.cached[row],
                    )
                )
            self._expect_twins(items, scores)
            before = self.curator.deduplicated
            result.review_requests = await self._retry(
                "redis", lambda: self.curator.select(items, batch, now, policy)
            )
            result.deduplicated = self.curator.deduplicated - before
            if self.on_scored is not None:
                await self.on_scored(batch)
            self.metrics.batch_size.observe(len(items))
            if not all(scores.cached):
                self.metrics.scoring_seconds.observe(scoring_s)

        await self._deliver(result)
        if result.review_requests:
            requests = result.review_requests
            await self._retry("redis", lambda: self.curator.commit(requests))
        self._count(result)
        return result

    async def _deliver(self, result: BatchResult) -> None:
        outgoing = [
            (self.topics.decisions, d.item_id.encode(), encode(d)) for d in result.decisions
        ]
        outgoing += [
            (self.topics.review_requests, r.item_id.encode(), encode(r))
            for r in result.review_requests
        ]
        outgoing += [dead_letter_output(dl) for dl in result.dead_letters]
        await deliver(self.sink, outgoing, self._retry)

    def _count(self, result: BatchResult) -> None:
        m = self.metrics
        for d in result.decisions:
            m.items.labels(action=d.action.value).inc()
            if d.latency_s is not None:
                m.decision_latency.observe(d.latency_s)
        for r in result.review_requests:
            m.review_requests.labels(reason=r.reason.value).inc()
        if result.deduplicated:
            m.review_duplicates.inc(result.deduplicated)
        for dl in result.dead_letters:
            m.dead_letters.labels(topic=dl.source_topic, reason=dl.reason).inc()
