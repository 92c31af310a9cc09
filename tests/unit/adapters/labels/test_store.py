"""The expert label store on a real redis-server (the unit session's own, on a unix socket):
reviewers register, are excluded and cleared; items sent to review keep their text, score and
embedding and count as open until labelled; the first label of (item, reviewer) under a policy
wins, in the raw data too; policies never mix; and the train/eval datasets hold consensus labels
of reviewed items only, without excluded reviewers' votes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from adapters.labels.consensus import split_of
from adapters.labels.store import LabeledExample, LabelStore, ReviewedItem

Body = Callable[[LabelStore, Redis], Awaitable[None]]


@pytest.fixture
def run(run_redis: Any, prefix: str) -> Callable[[Body], None]:
    """``run(body)``: ``body(store, client)`` on a key prefix of this test's own."""

    def go(body: Body) -> None:
        run_redis(lambda redis: body(LabelStore(redis, prefix), redis))

    return go


def _reviewed(item_id: str, *, at: float = 1.0, embedding: Any = None) -> ReviewedItem:
    return ReviewedItem(item_id, f"text of {item_id}", embedding, 0.5, "uncertain", at)


def _ids_in(split: str, n: int, *, eval_share: float = 0.4) -> list[str]:
    """The first ``n`` ids ``item-<k>`` that `split_of` puts in ``split``."""
    found = (f"item-{k}" for k in range(10_000))
    out = [i for i in found if split_of(i, eval_share=eval_share) == split]
    return out[:n]


def test_reviewers_register_are_excluded_and_cleared(run: Callable[[Body], None]) -> None:
    async def body(store: LabelStore, _redis: Redis) -> None:
        assert await store.register_reviewers([]) == 0
        assert await store.register_reviewers(["alice", "bob"]) == 2
        assert await store.register_reviewers(iter(["bob", "carol"])) == 1  # bob already was
        assert await store.registered() == {"alice", "bob", "carol"}
        assert await store.is_registered("alice") and not await store.is_registered("mallory")

        assert await store.excluded() == set()
        await store.set_excluded(["bob", "carol"])
        assert await store.excluded() == {"bob", "carol"}
        await store.set_excluded(["carol"])  # replaces the set, not added to it
        assert await store.excluded() == {"carol"}
        await store.clear("carol")
        assert await store.excluded() == set() and await store.cleared() == {"carol"}
        await store.set_excluded([])
        assert await store.excluded() == set()

    run(body)


def test_review_requests_keep_text_score_and_embedding_and_stay_open_until_labelled(
    run: Callable[[Body], None],
) -> None:
    embedding = np.array([0.25, -1.5, 3.0], dtype=np.float32)

    async def body(store: LabelStore, _redis: Redis) -> None:
        await store.record_requests("v1", [])
        assert await store.open_count("v1") == 0
        await store.record_requests(
            "v1", [_reviewed("a", at=10.0, embedding=embedding), _reviewed("b", at=11.0)]
        )
        assert await store.open_count("v1") == 2
        assert await store.open_count("v2") == 0
        got = await store.reviewed_items(["a", "b", "never-requested"])
        assert set(got) == {"a", "b"}
        a = got["a"]
        assert (a.text, a.p_violating, a.reason, a.requested_at) == (
            "text of a",
            0.5,
            "uncertain",
            10.0,
        )
        assert a.embedding is not None and a.embedding.dtype == np.float32
        np.testing.assert_array_equal(a.embedding, embedding)
        assert got["b"].embedding is None
        assert await store.reviewed_items([]) == {}

        await store.add_label("v1", "a", "alice", "benign", 12.0)
        assert await store.open_count("v1") == 1  # labelled: no longer open

    run(body)


def test_the_first_label_of_an_item_by_a_reviewer_wins_in_the_raw_data(
    run: Callable[[Body], None], prefix: str
) -> None:
    async def body(store: LabelStore, redis: Redis) -> None:
        assert await store.add_label("v1", "a", "alice", "benign", 100.0) == "stored"
        assert await store.add_label("v1", "a", "alice", "benign", 100.0) == "duplicate"
        # the same reviewer's later, other answer: the last call, so an overwrite would show
        assert await store.add_label("v1", "a", "alice", "violating", 200.0) == "duplicate"
        assert await store.add_label("v1", "a", "bob", "violating", 150.0) == "stored"
        # the documented keys, read raw: one field per reviewer, the first label and its time
        raw = await redis.hgetall(f"{prefix}:labels:v1:a")
        assert {k.decode(): json.loads(v) for k, v in raw.items()} == {
            "alice": {"label": "benign", "at": 100.0},
            "bob": {"label": "violating", "at": 150.0},
        }
        # the item's first-label time is the first label's, not a later one's
        assert await redis.zscore(f"{prefix}:labels:v1:items", "a") == 100.0
        assert await store.votes("v1", "a") == {"alice": "benign", "bob": "violating"}
        assert await store.votes("v1", "unlabelled") == {}

    run(body)


def test_policies_never_mix_and_items_are_listed_by_first_label_time(
    run: Callable[[Body], None],
) -> None:
    async def body(store: LabelStore, _redis: Redis) -> None:
        assert await store.policies() == set()
        await store.add_label("v1", "late", "alice", "benign", 30.0)
        await store.add_label("v1", "early", "alice", "violating", 10.0)
        await store.add_label("v1", "early", "bob", "violating", 40.0)  # not a first label
        await store.add_label("v2", "early", "alice", "benign", 20.0)
        assert await store.policies() == {"v1", "v2"}
        assert await store.labelled_items("v1") == ["early", "late"]
        assert await store.labelled_items("v2") == ["early"]
        assert await store.labelled_items("v3") == []
        assert await store.labelled_since("v1", 10.0) == ["early", "late"]  # inclusive
        assert await store.labelled_since("v1", 10.5) == ["late"]
        assert await store.labelled_since("v1", 30.5) == []
        assert await store.all_votes("v1") == {
            "early": {"alice": "violating", "bob": "violating"},
            "late": {"alice": "benign"},
        }
        assert await store.all_votes("v2") == {"early": {"alice": "benign"}}
        assert await store.votes_every_policy() == {
            "v1/early": {"alice": "violating", "bob": "violating"},
            "v1/late": {"alice": "benign"},
            "v2/early": {"alice": "benign"},
        }

    run(body)


def test_datasets_hold_consensus_of_reviewed_items_per_split_without_excluded_votes(
    run: Callable[[Body], None],
) -> None:
    train = _ids_in("train", 4)
    evaluation = _ids_in("eval", 2)

    async def body(store: LabelStore, _redis: Redis) -> None:
        await store.record_requests("v1", [_reviewed(i) for i in train[:3] + evaluation])
        # train[0]: a clear majority
        for reviewer, label in (("alice", "violating"), ("bob", "violating"), ("carol", "benign")):
            await store.add_label("v1", train[0], reviewer, label, 1.0)
        # train[1]: a tie, until randy's vote is left out
        for reviewer, label in (("alice", "benign"), ("randy", "violating")):
            await store.add_label("v1", train[1], reviewer, label, 1.0)
        # train[2]: a tie that stays a tie
        for reviewer, label in (("alice", "benign"), ("bob", "violating")):
            await store.add_label("v1", train[2], reviewer, label, 1.0)
        # train[3]: labelled but never requested through borderline: no text to train on
        await store.add_label("v1", train[3], "alice", "benign", 1.0)
        for item_id in evaluation:
            await store.add_label("v1", item_id, "alice", "benign", 1.0)
        # the same item under another policy does not count for v1
        await store.add_label("v2", train[2], "carol", "violating", 1.0)

        got = await store.dataset("v1", "train")
        assert got == [LabeledExample(train[0], f"text of {train[0]}", "violating", 3)]
        await store.set_excluded(["randy"])
        got = await store.dataset("v1", "train")
        assert {e.item_id: (e.label, e.votes) for e in got} == {
            train[0]: ("violating", 3),
            train[1]: ("benign", 1),
        }
        held_out = await store.dataset("v1", "eval")
        assert sorted(e.item_id for e in held_out) == sorted(evaluation)
        assert {e.label for e in held_out} == {"benign"}
        assert await store.dataset("v3", "train") == []

    run(body)


def test_the_eval_share_moves_items_between_splits(run: Callable[[Body], None]) -> None:
    ids = [f"item-{k}" for k in range(40)]

    async def body(store: LabelStore, _redis: Redis) -> None:
        await store.record_requests("v1", [_reviewed(i) for i in ids])
        for item_id in ids:
            await store.add_label("v1", item_id, "alice", "benign", 1.0)
        held: dict[float, set[str]] = {}
        for share in (0.2, 0.6):
            held_out = {e.item_id for e in await store.dataset("v1", "eval", eval_share=share)}
            trained = {e.item_id for e in await store.dataset("v1", "train", eval_share=share)}
            assert held_out | trained == set(ids) and not held_out & trained
            assert held_out == {i for i in ids if split_of(i, eval_share=share) == "eval"}
            held[share] = held_out
        # a larger share only adds items to the evaluation split, never moves one out of it
        assert held[0.2] < held[0.6]

    run(body)
