"""The collector asks a second opinion for one label only when the rule says so
(`adapters.review.opinions`): the label disagrees with the model's decision (not its leaning
inside the review band), or its reviewer is new; an audit draw's second opinion was asked with
the request, so none is added."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.labels.store import ReviewedItem
from adapters.review.opinions import MIN_HISTORY
from tests.unit.streams.service.test_collect_admission import NOW, _doc, _record, _signed, _world


def _second_opinions(run_redis: Any, prefix: str, **case: Any) -> list[list[str]]:
    """Alice labels ad-1 (the model's P(violating) 0.6: violating under v1's 0.5 threshold)."""

    async def body(redis: Redis) -> list[list[str]]:
        world = await _world(redis, prefix)
        if "p" in case:  # the model's P(violating) when the item was requested
            await world.store.record_requests(
                "v1",
                [
                    ReviewedItem(
                        "ad-1", "text", None, case["p"], "boundary", NOW - 40, request_id="rq-1"
                    )
                ],
            )
        if case.get("audit"):
            await world.store.record_requests(
                "v1",
                [
                    ReviewedItem(
                        "ad-1",
                        "text",
                        None,
                        0.6,
                        "uncertain",
                        NOW - 40,
                        audit_drawn=True,
                        audit_rate=0.15,
                        request_id="rq-1",
                    )
                ],
            )
        world.collector.history["alice"] = case.get("history", MIN_HISTORY)
        world.collector.overlap_rate = 0.0
        label = _signed(world.alice, _doc(label=case.get("label", "violating")))
        result = await world.collector.handle([_record(label)])
        return [r.already_labeled_by for r in result.second_opinions]

    out: list[list[str]] = run_redis(body)
    return out


def test_one_label_that_agrees_with_the_model_is_enough(run_redis: Any, prefix: str) -> None:
    assert _second_opinions(run_redis, prefix) == []


@pytest.mark.parametrize(("p", "label"), [(0.9, "benign"), (0.1, "violating")])
def test_one_label_against_the_models_decision_asks_for_a_second(
    run_redis: Any, prefix: str, p: float, label: str
) -> None:
    assert _second_opinions(run_redis, prefix, p=p, label=label) == [["alice"]]


def test_one_label_against_the_models_leaning_in_the_band_is_enough(
    run_redis: Any, prefix: str
) -> None:
    # 0.6 is in v1's review band [0.3, 0.7]: the model decided nothing there
    assert _second_opinions(run_redis, prefix, label="benign") == []


def test_a_new_reviewers_label_asks_for_a_second(run_redis: Any, prefix: str) -> None:
    assert _second_opinions(run_redis, prefix, history=3) == [["alice"]]


def test_an_audit_draw_asked_for_two_already(run_redis: Any, prefix: str) -> None:
    assert _second_opinions(run_redis, prefix, audit=True, label="benign") == []
