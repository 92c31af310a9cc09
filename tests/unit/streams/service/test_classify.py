"""Unit tests for streams.classify.Classifier.handle with small fakes of our own interfaces (a
ServingModel, a Sink, a ReviewLedger): one decision per good item, dead letters for bad records,
review requests for the review band only and only once, metrics, and retries that end in a loud
InfrastructureError without marking the ledger; and Classifier.apply, the one way the serving
state changes: refused for an adapter that is not loaded or an older epoch, a batch in flight keeps
the state it started with, a new policy starts the curator's transition; and the peek that tokenises
the next batch ahead, which never raises, never decides and holds a bounded queue."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from adapters.review.routing import Action, RoutingPolicy
from models.scorer import ScoreBatch
from streams.service.classify import (
    AHEAD_PENDING,
    BatchResult,
    Classifier,
    ServingError,
    TokeniseAhead,
)
from streams.service.curate import Curator, review_request_id
from streams.service.metrics import Metrics
from streams.service.outbox import RawRecord
from streams.service.retry import InfrastructureError
from streams.service.serving import ServingState
from streams.wire.messages import DeadLetter, Decision, ReviewReason, ReviewRequest, decode
from streams.wire.topics import TopicNames

NOW = 1_700_000_000.0
LABELS = ("benign", "violating")
TOPICS = TopicNames()
POLICY = RoutingPolicy("v1", 0.5, 0.3, 0.7)

# probability of "violating" per text; chosen away from the band edges (float32 rounding)
P = {
    "buy cheap pills": 0.95,  # block
    "hello grandma": 0.05,  # allow
    "limited offer": 0.5,  # review, most uncertain
    "win a prize": 0.4,  # review
    "free shipping": 0.62,  # review
}


# --- fakes ---------------------------------------------------------------------------------------


@dataclass
class FakeScore:
    """A `ServingModel`: every adapter scores the texts of ``P`` alike, and names itself."""

    calls: list[list[str]] = field(default_factory=list)
    model_version: str = "model-1"
    loaded_adapters: list[str] = field(default_factory=lambda: ["adapter-1"])
    active: str = "adapter-1"
    meanwhile: Callable[[], None] | None = None  # runs while a batch is being scored

    def activate(self, adapter_id: str) -> None:
        self.active = adapter_id

    def score(self, texts: Sequence[str], adapter_id: str | None = None) -> ScoreBatch:
        self.calls.append(list(texts))
        p = np.array([P.get(t, 0.05) for t in texts], dtype=np.float32)
        probabilities = np.stack([1.0 - p, p], axis=1).astype(np.float32)
        embeddings = np.zeros((len(texts), 4), dtype=np.float32)
        if self.meanwhile is not None:
            self.meanwhile()
        return ScoreBatch(probabilities, embeddings, LABELS, adapter_id=adapter_id or self.active)


def _resolved() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


@dataclass
class FakeSink:
    """Records what was delivered; fails the first ``failures`` sends (None: every send)."""

    failures: int | None = 0
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    attempts: int = 0

    async def send(self, topic: str, key: bytes, value: bytes) -> Awaitable[object]:
        self.attempts += 1
        if self.failures is None or self.attempts <= self.failures:
            raise ConnectionError("broker unavailable")
        self.sent.append((topic, key, value))
        return _resolved()

    def on(self, topic: str) -> list[tuple[bytes, bytes]]:
        return [(k, v) for t, k, v in self.sent if t == topic]


@dataclass
class FakeLedger:
    requested: set[tuple[str, str]] = field(default_factory=set)
    mark_calls: list[list[str]] = field(default_factory=list)

    async def already_requested(self, policy_version: str, item_ids: Sequence[str]) -> list[bool]:
        return [(policy_version, i) in self.requested for i in item_ids]

    async def mark_requested(self, policy_version: str, item_ids: Sequence[str]) -> None:
        self.mark_calls.append(list(item_ids))
        self.requested.update((policy_version, i) for i in item_ids)


@dataclass
class World:
    classifier: Classifier
    score: FakeScore
    sink: FakeSink
    ledger: FakeLedger
    metrics: Metrics

    def handle(self, records: Sequence[RawRecord]) -> BatchResult:
        return asyncio.run(self.classifier.handle(records))

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


def _world(
    sink: FakeSink | None = None,
    ledger: FakeLedger | None = None,
    executor: ThreadPoolExecutor | None = None,
) -> World:
    score, metrics = FakeScore(), Metrics()
    sink = sink or FakeSink()
    ledger = ledger or FakeLedger()
    classifier = Classifier(
        model=score,
        executor=executor,
        sink=sink,
        curator=Curator(ledger=ledger, policy=POLICY),
        metrics=metrics,
        topics=TOPICS,
        state=ServingState(POLICY, "adapter-1"),
        worker="worker-1",
        max_text_bytes=1000,
        retry_attempts=3,
        retry_backoff_s=0.001,
        clock=lambda: NOW,
    )
    return World(classifier, score, sink, ledger, metrics)


def _record(
    item_id: str, text: str, produced_at: float | None = None, offset: int = 0
) -> RawRecord:
    doc: dict[str, object] = {"item_id": item_id, "text": text}
    if produced_at is not None:
        doc["produced_at"] = produced_at
    return RawRecord(TOPICS.items, 0, offset, item_id.encode(), json.dumps(doc).encode())


def _good_records() -> list[RawRecord]:
    return [
        _record(f"item-{i}", text, produced_at=NOW - 2.0 - i, offset=i) for i, text in enumerate(P)
    ]


def _decisions(sink: FakeSink) -> dict[str, Decision]:
    out = {}
    for key, value in sink.on(TOPICS.decisions):
        decision = decode(value, Decision)
        assert key == decision.item_id.encode()
        out[decision.item_id] = decision
    return out


def _requests(sink: FakeSink) -> dict[str, ReviewRequest]:
    out = {}
    for key, value in sink.on(TOPICS.review_requests):
        request = decode(value, ReviewRequest)
        assert key == request.item_id.encode()
        out[request.item_id] = request
    return out


EXPECTED_ACTIONS = {
    "item-0": Action.BLOCK,
    "item-1": Action.ALLOW,
    "item-2": Action.REVIEW,
    "item-3": Action.REVIEW,
    "item-4": Action.REVIEW,
}
REVIEW_ITEMS = {"item-2", "item-3", "item-4"}


# --- decisions -----------------------------------------------------------------------------------


def test_one_decision_per_item_with_action_and_probabilities() -> None:
    w = _world()
    result = w.handle(_good_records())

    decisions = _decisions(w.sink)
    assert len(w.sink.on(TOPICS.decisions)) == 5
    assert {i: d.action for i, d in decisions.items()} == EXPECTED_ACTIONS
    for i, text in enumerate(P):
        d = decisions[f"item-{i}"]
        assert d.probabilities == {"violating": pytest.approx(P[text], abs=1e-6)}
        assert (d.model_version, d.adapter_version, d.policy_version) == (
            "model-1",
            "adapter-1",
            "v1",
        )
        assert d.latency_s == pytest.approx(2.0 + i)
        assert d.decided_at == NOW
        assert d.worker == "worker-1"
        assert d.scoring_s >= 0
    assert [d.item_id for d in result.decisions] == [f"item-{i}" for i in range(5)]
    assert w.score.calls == [list(P)]  # one scoring call for the whole batch
    assert result.dead_letters == []


def test_latency_needs_produced_at_and_is_never_negative() -> None:
    w = _world()
    w.handle([_record("no-time", "hello grandma"), _record("future", "hello grandma", NOW + 60)])
    decisions = _decisions(w.sink)
    assert decisions["no-time"].latency_s is None
    assert decisions["future"].latency_s == 0.0
    assert w.sample("borderline_decision_latency_seconds_count") == 1


def test_scoring_in_an_executor_gives_the_same_decisions() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        w = _world(executor=pool)
        w.handle(_good_records())
    assert {i: d.action for i, d in _decisions(w.sink).items()} == EXPECTED_ACTIONS


# --- dead letters --------------------------------------------------------------------------------


def test_malformed_records_become_dead_letters_with_reason_bytes_and_key() -> None:
    w = _world()
    bad_utf8 = RawRecord(TOPICS.items, 2, 17, b"k-bad", b"\xff\xfe")
    tombstone = RawRecord(TOPICS.items, 1, 18, b"k-tomb", None)
    no_key = RawRecord(TOPICS.items, 0, 19, None, b'{"item_id": "x", "text": "  "}')
    result = w.handle([bad_utf8, _record("item-1", "hello grandma"), tombstone, no_key])

    dlq = w.sink.on(TOPICS.items + ".dlq")
    assert TOPICS.items + ".dlq" == TOPICS.items_dlq
    assert [k for k, _ in dlq] == [b"k-bad", b"k-tomb", b""]
    letters = [decode(v, DeadLetter) for _, v in dlq]
    assert [dl.reason for dl in letters] == ["invalid_utf8", "empty_value", "empty_text"]
    assert letters[0].original() == b"\xff\xfe"
    assert base64.b64decode(letters[0].key_b64 or "") == b"k-bad"
    assert (letters[0].partition, letters[0].offset) == (2, 17)
    assert letters[0].source_topic == TOPICS.items
    assert letters[0].failed_at == NOW
    assert letters[2].original() == b'{"item_id": "x", "text": "  "}'
    assert letters[2].key_b64 is None
    assert len(result.dead_letters) == 3

    # the good item in the same batch is still decided
    assert list(_decisions(w.sink)) == ["item-1"]
    assert w.score.calls == [["hello grandma"]]
    labels = {"topic": TOPICS.items, "reason": "invalid_utf8"}
    assert w.sample("borderline_dead_letters_total", labels) == 1
    labels = {"topic": TOPICS.items, "reason": "empty_text"}
    assert w.sample("borderline_dead_letters_total", labels) == 1


def test_dead_letter_goes_to_the_dlq_of_its_own_source_topic() -> None:
    w = _world()
    w.handle([RawRecord("tenant-a.items", 0, 0, b"k", b"[]")])
    assert [t for t, _, _ in w.sink.sent] == ["tenant-a.items.dlq"]


def test_all_malformed_batch() -> None:
    w = _world()
    result = w.handle([RawRecord(TOPICS.items, 0, i, b"k", b"{oops") for i in range(3)])
    assert w.score.calls == []
    assert result.decisions == [] and result.review_requests == []
    assert len(w.sink.on(TOPICS.items_dlq)) == 3
    assert len(w.sink.sent) == 3
    assert w.ledger.mark_calls == []
    labels = {"topic": TOPICS.items, "reason": "invalid_json"}
    assert w.sample("borderline_dead_letters_total", labels) == 3
    assert w.sample("borderline_batch_size_count") == 0


def test_empty_batch() -> None:
    w = _world()
    result = w.handle([])
    assert result == BatchResult()
    assert w.score.calls == []
    assert w.sink.attempts == 0
    assert w.ledger.mark_calls == []


# --- review requests -----------------------------------------------------------------------------


def test_review_requests_only_for_the_review_band() -> None:
    w = _world()
    result = w.handle(_good_records())

    requests = _requests(w.sink)
    assert set(requests) == REVIEW_ITEMS
    assert {r.item_id for r in result.review_requests} == REVIEW_ITEMS
    for item_id, r in requests.items():
        assert r.request_id == review_request_id("v1", item_id, "uncertain")
        assert r.reason is ReviewReason.UNCERTAIN
        assert r.policy_version == "v1"
        assert r.requested_at == NOW
        assert r.text == list(P)[int(item_id.split("-")[1])]  # the text travels with it
        assert r.probabilities == {"violating": pytest.approx(P[r.text], abs=1e-6)}
    assert w.ledger.requested == {("v1", i) for i in REVIEW_ITEMS}
    assert w.sample("borderline_review_requests_total", {"reason": "uncertain"}) == 3


def test_priority_is_higher_nearer_one_half() -> None:
    w = _world()
    w.handle(_good_records())
    r = _requests(w.sink)
    # p = 0.5, 0.62, 0.4: distance from 0.5 is 0, 0.12, 0.1
    assert r["item-2"].priority == pytest.approx(1.0)
    assert r["item-2"].priority > r["item-3"].priority > r["item-4"].priority
    assert r["item-3"].priority == pytest.approx(0.8, abs=1e-5)
    assert r["item-4"].priority == pytest.approx(0.76, abs=1e-5)


def test_request_id_is_deterministic_and_distinct() -> None:
    rid = review_request_id("v1", "item-2", "uncertain")
    assert rid == review_request_id("v1", "item-2", ReviewReason.UNCERTAIN)
    assert rid.startswith("rr-")
    others = {
        review_request_id("v2", "item-2", "uncertain"),
        review_request_id("v1", "item-3", "uncertain"),
        review_request_id("v1", "item-2", "boundary"),
    }
    assert rid not in others and len(others) == 3


def test_second_handle_sends_no_new_review_requests() -> None:
    w = _world()
    w.handle(_good_records())
    first = list(w.sink.sent)
    result = w.handle(_good_records())
    second = w.sink.sent[len(first) :]

    assert [t for t, _, _ in second].count(TOPICS.review_requests) == 0
    assert [t for t, _, _ in second].count(TOPICS.decisions) == 5  # decisions are re-emitted
    assert result.review_requests == []
    assert result.deduplicated == 3
    assert w.sample("borderline_review_requests_deduplicated_total") == 3
    assert w.sample("borderline_review_requests_total", {"reason": "uncertain"}) == 3


def test_a_new_classifier_sharing_the_ledger_also_deduplicates() -> None:
    ledger = FakeLedger()
    _world(ledger=ledger).handle(_good_records())
    again = _world(ledger=ledger)
    again.handle(_good_records())
    assert _requests(again.sink) == {}


def test_same_item_twice_in_one_batch_is_requested_once() -> None:
    w = _world()
    w.handle([_record("dup", "limited offer", offset=1), _record("dup", "limited offer", offset=2)])
    assert len(w.sink.on(TOPICS.review_requests)) == 1
    assert w.sample("borderline_review_requests_total", {"reason": "uncertain"}) == 1


# --- metrics -------------------------------------------------------------------------------------


def test_item_counters_move_by_action() -> None:
    w = _world()
    w.handle(_good_records())
    assert w.sample("borderline_items_total", {"action": "allow"}) == 1
    assert w.sample("borderline_items_total", {"action": "block"}) == 1
    assert w.sample("borderline_items_total", {"action": "review"}) == 3
    assert w.sample("borderline_batch_size_count") == 1
    assert w.sample("borderline_batch_size_sum") == 5
    assert w.sample("borderline_scoring_seconds_count") == 1
    assert w.sample("borderline_decision_latency_seconds_count") == 5
    w.handle([_record("again", "hello grandma")])
    assert w.sample("borderline_items_total", {"action": "allow"}) == 2


# --- infrastructure failures ---------------------------------------------------------------------


def test_sink_failing_twice_is_retried_and_delivers() -> None:
    w = _world(sink=FakeSink(failures=2))
    w.handle(_good_records())
    assert set(_decisions(w.sink)) == set(EXPECTED_ACTIONS)
    assert len(w.sink.on(TOPICS.decisions)) == 5
    assert set(_requests(w.sink)) == REVIEW_ITEMS
    assert w.sample("borderline_infrastructure_retries_total", {"target": "kafka"}) == 2
    assert w.ledger.requested == {("v1", i) for i in REVIEW_ITEMS}


@dataclass
class FailingDeliverySink(FakeSink):
    """``send`` accepts every message, but the very first delivery fails."""

    async def send(self, topic: str, key: bytes, value: bytes) -> Awaitable[object]:
        self.attempts += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.attempts == 1:
            future.set_exception(ConnectionError("delivery failed"))
        else:
            self.sent.append((topic, key, value))
            future.set_result(None)
        return future


def test_failed_delivery_is_retried() -> None:
    w = _world(sink=FailingDeliverySink())
    w.handle(_good_records())
    assert set(_decisions(w.sink)) == set(EXPECTED_ACTIONS)
    assert w.sample("borderline_infrastructure_retries_total", {"target": "kafka"}) == 1


def test_sink_always_failing_raises_and_leaves_the_ledger_unmarked() -> None:
    ledger = FakeLedger()
    w = _world(sink=FakeSink(failures=None), ledger=ledger)
    with pytest.raises(InfrastructureError, match="kafka"):
        w.handle(_good_records())
    assert w.sink.attempts == 3  # retry_attempts
    assert ledger.mark_calls == []
    assert ledger.requested == set()
    assert w.sample("borderline_items_total", {"action": "review"}) == 0

    # the redelivered batch (nothing was committed) requests review again
    redelivered = _world(ledger=ledger)
    redelivered.handle(_good_records())
    assert set(_requests(redelivered.sink)) == REVIEW_ITEMS


@dataclass
class DownLedger(FakeLedger):
    async def already_requested(self, policy_version: str, item_ids: Sequence[str]) -> list[bool]:
        raise ConnectionError("redis down")


def test_ledger_always_failing_raises_before_anything_is_sent() -> None:
    w = _world(ledger=DownLedger())
    with pytest.raises(InfrastructureError, match="redis"):
        w.handle(_good_records())
    assert w.sink.sent == []
    assert w.sample("borderline_infrastructure_retries_total", {"target": "redis"}) == 2


# --- the serving state ---------------------------------------------------------------------------

STRICT = RoutingPolicy("v2", block_threshold=0.9, review_low=0.45, review_high=0.55)


def test_apply_serves_the_new_state_from_the_next_batch() -> None:
    w = _world()
    w.score.loaded_adapters.append("adapter-2")
    w.classifier.apply(ServingState(STRICT, "adapter-2", epoch=7))
    assert w.classifier.state == ServingState(STRICT, "adapter-2", epoch=7)
    assert w.score.active == "adapter-2"
    w.handle(_good_records())
    decisions = _decisions(w.sink)
    assert {i: d.action for i, d in decisions.items()} == {
        "item-0": Action.BLOCK,  # 0.95
        "item-1": Action.ALLOW,
        "item-2": Action.REVIEW,  # 0.5, the only one in the narrow band
        "item-3": Action.ALLOW,  # 0.4: below the band and the threshold
        "item-4": Action.ALLOW,  # 0.62
    }
    assert {(d.policy_version, d.adapter_version) for d in decisions.values()} == {
        ("v2", "adapter-2")
    }
    assert {r.policy_version for r in _requests(w.sink).values()} == {"v2"}
    assert w.ledger.requested == {("v2", "item-2")}


def test_a_batch_in_flight_keeps_the_state_it_started_with() -> None:
    w = _world()
    w.score.loaded_adapters.append("adapter-2")

    def swap_once() -> None:  # the control plane swaps while the first batch is being scored
        w.score.meanwhile = None
        w.classifier.apply(ServingState(STRICT, "adapter-2", epoch=7))

    w.score.meanwhile = swap_once
    w.handle(_good_records())
    first = _decisions(w.sink)
    assert {i: d.action for i, d in first.items()} == EXPECTED_ACTIONS
    assert {(d.policy_version, d.adapter_version) for d in first.values()} == {("v1", "adapter-1")}
    assert set(_requests(w.sink)) == REVIEW_ITEMS
    assert {r.policy_version for r in _requests(w.sink).values()} == {"v1"}
    assert w.ledger.requested == {("v1", i) for i in REVIEW_ITEMS}

    w.sink.sent.clear()
    w.handle(_good_records())
    assert {(d.policy_version, d.adapter_version) for d in _decisions(w.sink).values()} == {
        ("v2", "adapter-2")
    }


def test_apply_refuses_an_adapter_that_is_not_loaded() -> None:
    w = _world()
    before = w.classifier.state
    with pytest.raises(ServingError, match="'adapter-9' is not loaded on model model-1"):
        w.classifier.apply(ServingState(POLICY, "adapter-9", epoch=3))
    assert w.classifier.state == before
    assert w.score.active == "adapter-1"


def test_apply_refuses_an_older_epoch_under_the_same_policy_only() -> None:
    w = _world()
    w.score.loaded_adapters.append("adapter-2")
    w.classifier.apply(ServingState(POLICY, "adapter-2", epoch=9))
    with pytest.raises(ServingError, match=r"epoch 4 .* older than epoch 9 serving policy v1"):
        w.classifier.apply(ServingState(POLICY, "adapter-1", epoch=4))
    assert w.classifier.state == ServingState(POLICY, "adapter-2", epoch=9)
    # epochs count per policy: a new policy's first promotion may carry any epoch
    w.classifier.apply(ServingState(STRICT, "adapter-1", epoch=4))
    assert w.classifier.state.adapter_id == "adapter-1"


def test_a_new_policy_starts_the_curators_transition() -> None:
    w = _world()
    curator = w.classifier.curator
    configured_rate = curator.audit_rate
    # the same policy again (an epoch moved): no transition
    w.classifier.apply(ServingState(POLICY, "adapter-1", epoch=2, audit_rate=0.5))
    assert curator.audit_rate == configured_rate
    assert w.score.calls == []

    w.classifier.apply(
        ServingState(STRICT, "adapter-1", epoch=0, audit_rate=0.2, examples=("win a prize",))
    )
    assert curator.audit_rate == 0.2
    assert w.score.calls == [["win a prize"]]  # the examples' embeddings, for near-example mining


# --- poison: a record that fails twice costs a dead letter, never the worker ----------------------


@dataclass
class ExplodingScore(FakeScore):
    """Scoring fails for any batch holding the text ``boom`` (a bug the content triggers)."""

    def score(self, texts: Sequence[str], adapter_id: str | None = None) -> ScoreBatch:
        if "boom" in texts:
            self.calls.append(list(texts))
            raise ValueError("tokenizer exploded")
        return super().score(texts, adapter_id)


def test_a_record_that_fails_twice_is_dead_lettered_as_poison_and_the_rest_decided() -> None:
    w = _world()
    w.classifier.model = w.score = ExplodingScore()
    records = [*_good_records(), _record("bad", "boom", offset=99)]
    result = w.handle(records)  # does not raise
    assert {d.item_id for d in result.decisions} == set(EXPECTED_ACTIONS)
    assert [(dl.reason, dl.offset) for dl in result.dead_letters] == [("poison", 99)]
    assert "tokenizer exploded" in result.dead_letters[0].detail
    delivered = [decode(v, DeadLetter) for _, v in w.sink.on(TOPICS.items + ".dlq")]
    assert [dl.original() for dl in delivered] == [records[-1].value]
    assert set(_decisions(w.sink)) == set(EXPECTED_ACTIONS)
    assert w.sample("borderline_dead_letters_total", {"topic": TOPICS.items, "reason": "poison"})
    # the whole batch once, then each record alone: the bad one failed twice
    assert sum("boom" in call for call in w.score.calls) == 2


def test_a_poison_record_alone_is_dead_lettered_at_once() -> None:
    w = _world()
    w.classifier.model = w.score = ExplodingScore()
    result = w.handle([_record("bad", "boom", offset=7)])
    assert [dl.reason for dl in result.dead_letters] == ["poison"]


def test_an_infrastructure_failure_is_not_poison() -> None:
    w = _world(sink=FakeSink(failures=None))
    with pytest.raises(InfrastructureError):
        w.handle(_good_records())
    assert w.sink.sent == []


# --- the swap gate -------------------------------------------------------------------------------


def test_a_batch_waits_for_an_adapter_being_switched_in() -> None:
    w = _world()
    w.score.loaded_adapters.append("adapter-2")

    async def go() -> BatchResult:
        with w.classifier.gate.closed():
            batch = asyncio.ensure_future(w.classifier.handle(_good_records()))
            await asyncio.sleep(0.02)
            assert not batch.done() and w.score.calls == []  # waiting at the gate
            w.classifier.apply(ServingState(POLICY, "adapter-2", epoch=1))
        return await batch

    result = asyncio.run(go())
    assert {d.adapter_version for d in result.decisions} == {"adapter-2"}


def test_a_switch_that_takes_too_long_does_not_hold_the_stream() -> None:
    w = _world()
    w.classifier.gate.wait_s = 0.05

    async def go() -> tuple[BatchResult, float]:
        loop = asyncio.get_running_loop()
        with w.classifier.gate.closed():  # never switched while the batch waits
            started = loop.time()
            result = await w.classifier.handle(_good_records())
            return result, loop.time() - started

    result, waited = asyncio.run(go())
    assert 0.05 <= waited < 1.0
    assert {d.adapter_version for d in result.decisions} == {"adapter-1"}


# --- tokenising the next batch ahead --------------------------------------------------------------


@dataclass
class Ahead:
    seen: list[list[str]] = field(default_factory=list)

    def pretokenise(self, texts: Sequence[str]) -> None:
        self.seen.append(list(texts))


class Held:
    """An executor that runs nothing until told: the tokenise thread still busy."""

    def __init__(self) -> None:
        self.futures: list[tuple[Future[None], Callable[[], None]]] = []

    def submit(self, fn: Callable[..., None], *args: object) -> Future[None]:
        future: Future[None] = Future()
        self.futures.append((future, lambda: fn(*args)))
        return future

    def run_all(self) -> None:
        for future, call in self.futures:
            call()
            future.set_result(None)
        self.futures.clear()


def _item_bytes(text: object) -> bytes:
    return json.dumps({"item_id": "i", "text": text, "produced_at": NOW}).encode()


def test_tokenise_ahead_peeks_at_good_items_and_leaves_every_bad_record_to_its_batch() -> None:
    model = Ahead()
    ahead = TokeniseAhead(model, max_bytes=200, pool=ThreadPoolExecutor(max_workers=1))
    hostile: list[object] = [None, "text", b"", b"\xff\xfe", b"not json", b"[1, 2]", b"{}"]
    hostile += [_item_bytes(5), _item_bytes("   "), _item_bytes("x" * 300), 12]
    for value in hostile:
        ahead(value)  # never raises, never submits
    ahead(_item_bytes("buy cheap pills"))
    ahead(bytearray(_item_bytes("hello grandma")))
    ahead.pool.shutdown(wait=True)
    assert model.seen == [["buy cheap pills"], ["hello grandma"]]
    assert ahead.submitted == 2 and ahead._pending == 0
    ahead(_item_bytes("after shutdown"))  # the pool refuses: the batch tokenises it
    assert ahead._pending == 0 and model.seen == [["buy cheap pills"], ["hello grandma"]]


def test_tokenise_ahead_queues_at_most_its_bound_and_takes_more_once_the_thread_catches_up() -> (
    None
):
    model, pool = Ahead(), Held()
    ahead = TokeniseAhead(model, max_bytes=10_000, pool=pool)  # type: ignore[arg-type]
    for k in range(AHEAD_PENDING + 5):
        ahead(_item_bytes(f"text {k}"))
    assert len(pool.futures) == AHEAD_PENDING  # the rest are tokenised with their batch
    pool.run_all()
    assert ahead._pending == 0 and len(model.seen) == AHEAD_PENDING
    ahead(_item_bytes("one more"))
    assert len(pool.futures) == 1
