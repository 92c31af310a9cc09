"""Unit tests for the collector's model-vs-experts feedback to the drift watch, with small fakes of
our own interfaces (the label store, the routing per policy version, a Sink): when an item's
consensus settles, the model's verdict is read at that item's policy's block threshold (not at a
fixed 0.5), so a policy that blocks at 0.8 does not count a 0.6 item as "violating"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import pytest

from adapters.labels.store import ReviewedItem
from adapters.review.routing import RoutingPolicy
from streams.service.collect import Collector
from streams.service.metrics import Metrics
from streams.service.outbox import RawRecord
from streams.service.retry import InfrastructureError
from streams.wire.messages import ReviewLabel
from streams.wire.topics import TopicNames

TOPICS = TopicNames()
ROUTINGS = {
    "v1": RoutingPolicy("v1", block_threshold=0.5, review_low=0.3, review_high=0.7),
    "v2": RoutingPolicy("v2", block_threshold=0.8, review_low=0.2, review_high=0.8),
}


@dataclass
class FakeLabelStore:
    """The part of `LabelStore` the collector's batch path uses."""

    p_violating: dict[str, float]
    votes_by_item: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    async def registered(self) -> set[str]:
        return {"ann", "bob"}

    async def excluded(self) -> set[str]:
        return set()

    async def add_label(
        self, policy: str, item_id: str, reviewer: str, label: str, labeled_at: float
    ) -> str:
        votes = self.votes_by_item.setdefault((policy, item_id), {})
        if reviewer in votes:
            return "duplicate"
        votes[reviewer] = label
        return "stored"

    async def votes(self, policy: str, item_id: str) -> dict[str, str]:
        return dict(self.votes_by_item.get((policy, item_id), {}))

    async def reviewed_items(self, item_ids: Sequence[str]) -> dict[str, ReviewedItem]:
        return {
            i: ReviewedItem(i, "text", None, self.p_violating[i], "uncertain", 0.0)
            for i in item_ids
            if i in self.p_violating
        }


class AdmitAll:
    """An `Admission` that admits every label (what these tests are about is elsewhere; the
    admission is tested in test_collect_admission.py against a real Redis)."""

    async def refusal(self, label: object, *, now: float) -> None:
        return None


@dataclass
class FakeRoutings:
    asked: list[str] = field(default_factory=list)

    async def routing(self, policy_version: str) -> RoutingPolicy:
        self.asked.append(policy_version)
        return ROUTINGS[policy_version]


@dataclass
class FakeSink:
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    async def send(self, topic: str, key: bytes, value: bytes) -> Awaitable[object]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _label(item_id: str, reviewer: str, label: str, policy: str) -> RawRecord:
    doc = {
        "item_id": item_id,
        "reviewer_id": reviewer,
        "label": label,
        "policy_version": policy,
        "labeled_at": 1.0,
    }
    return RawRecord(TOPICS.review_labels, 0, 0, item_id.encode(), json.dumps(doc).encode())


def _feedback(p: float, policy: str, expert_label: str) -> tuple[list[list[bool]], list[str]]:
    """What the collector tells the drift watch when two experts agree on one item."""
    heard: list[list[bool]] = []
    routings = FakeRoutings()

    async def on_feedback(disagreements: list[bool]) -> None:
        heard.append(disagreements)

    collector = Collector(
        store=FakeLabelStore({"item-1": p}),  # type: ignore[arg-type]
        admission=AdmitAll(),
        routings=routings,
        sink=FakeSink(),
        metrics=Metrics(),
        topics=TOPICS,
        worker="collector-1",
        on_feedback=on_feedback,
    )
    asyncio.run(
        collector.handle(
            [
                _label("item-1", "ann", expert_label, policy),
                _label("item-1", "bob", expert_label, policy),
            ]
        )
    )
    return heard, routings.asked


def test_a_score_below_the_policys_block_threshold_is_not_the_model_saying_violating() -> None:
    # block_threshold 0.8: the model's 0.6 is "benign", as the experts say; at a fixed 0.5 it
    # would have counted as a disagreement and pushed the feedback drift detector
    heard, asked = _feedback(0.6, "v2", "benign")
    assert heard == [[False]]
    assert asked == ["v2"]


@pytest.mark.parametrize(
    ("p", "policy", "expert_label", "disagrees"),
    [
        (0.6, "v2", "violating", True),  # below v2's 0.8: the model said benign
        (0.85, "v2", "violating", False),
        (0.85, "v2", "benign", True),
        (0.6, "v1", "violating", False),  # v1 blocks at 0.5
        (0.6, "v1", "benign", True),
    ],
)
def test_the_verdict_is_read_at_the_items_own_policy_threshold(
    p: float, policy: str, expert_label: str, disagrees: bool
) -> None:
    heard, _ = _feedback(p, policy, expert_label)
    assert heard == [[disagrees]]


@dataclass
class RefuseOne:
    """An `Admission` that fails on one item as a bug meeting a hostile value would (``error``),
    every time it is asked; every other label is admitted."""

    item_id: str
    error: Exception
    asked: int = 0

    async def refusal(self, label: ReviewLabel, *, now: float) -> None:
        if label.item_id == self.item_id:
            self.asked += 1
            raise self.error
        return None


def _collector(admission: object, sink: FakeSink) -> tuple[Collector, FakeLabelStore]:
    store = FakeLabelStore({})
    collector = Collector(
        store=store,  # type: ignore[arg-type]
        admission=admission,  # type: ignore[arg-type]
        routings=FakeRoutings(),
        sink=sink,
        metrics=Metrics(),
        topics=TOPICS,
        worker="collector-1",
        retry_backoff_s=0.0,
    )
    return collector, store


def _batch_around(poison: RawRecord) -> list[RawRecord]:
    return [
        _label("item-1", "ann", "benign", "v1"),
        poison,
        _label("item-2", "ann", "violating", "v1"),
        _label("item-2", "bob", "violating", "v1"),
    ]


def test_a_number_json_refuses_to_read_dead_letters_its_label_and_the_batch_is_stored() -> None:
    # 5,000 digits: `json` raises ValueError (not a JSONDecodeError) past 4,300; before, the
    # whole batch failed and the collector exited, again on every restart; then it was caught
    # as poison; now decoding gives it its reason
    doc = b'{"item_id":"item-9","reviewer_id":"ann","label":"benign","policy_version":"v1",'
    poison = RawRecord(
        TOPICS.review_labels, 0, 7, b"item-9", doc + b'"labeled_at":1' + b"0" * 5000 + b"}"
    )
    sink = FakeSink()
    collector, store = _collector(AdmitAll(), sink)
    result = asyncio.run(collector.handle(_batch_around(poison)))
    assert [(lb.item_id, lb.reviewer_id) for lb in result.stored] == [
        ("item-1", "ann"),
        ("item-2", "ann"),
        ("item-2", "bob"),
    ]
    assert [dl.reason for dl in result.dead_letters] == ["invalid_json"]
    assert "5001 digits" in result.dead_letters[0].detail
    assert result.dead_letters[0].offset == 7
    assert [t for t, _, _ in sink.sent] == [TOPICS.review_labels_dlq]
    assert set(store.votes_by_item) == {("v1", "item-1"), ("v1", "item-2")}


def test_a_label_that_fails_twice_is_poison_and_the_rest_of_its_batch_is_stored() -> None:
    admission = RefuseOne("item-9", KeyError("surprise"))
    collector, _ = _collector(admission, FakeSink())
    result = asyncio.run(collector.handle(_batch_around(_label("item-9", "bob", "benign", "v1"))))
    assert len(result.stored) == 3
    assert [dl.reason for dl in result.dead_letters] == ["poison"]
    assert admission.asked == 2  # tried once more before it was given up


def test_a_redis_failure_is_not_the_labels_fault() -> None:
    # Redis failing is retried under the retry policy, then ends the batch (and the process,
    # which does not commit): nothing is dead-lettered
    for error in (InfrastructureError("redis unreachable"), ConnectionResetError("gone")):
        admission = RefuseOne("item-9", error)
        collector, _ = _collector(admission, FakeSink())
        batch = _batch_around(_label("item-9", "bob", "benign", "v1"))
        with pytest.raises(InfrastructureError):
            asyncio.run(collector.handle(batch))
        assert admission.asked == (1 if isinstance(error, InfrastructureError) else 5)
