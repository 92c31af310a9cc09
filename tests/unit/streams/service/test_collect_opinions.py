"""The collector asks a second opinion for one label only when the rule says so
(`adapters.review.opinions`): the label disagrees with the model's decision (not its leaning
inside the review band), or its reviewer is new; an audit draw's second opinion was asked with
the request, so none is added."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.labels.store import ReviewedItem
from adapters.registry.store import ActiveRecord, AdapterRegistry
from adapters.review.opinions import MIN_HISTORY
from streams.service.collect import CollectResult
from tests.unit.streams.service.test_collect_admission import NOW, _doc, _record, _signed, _world


def _collect(run_redis: Any, prefix: str, **case: Any) -> CollectResult:
    """Alice labels ad-1 (the model's P(violating) 0.6: violating under v1's 0.5 threshold)."""

    async def body(redis: Redis) -> CollectResult:
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
        if "adapted" in case:  # the registry, real over the test's Redis, tells the collector
            registry = AdapterRegistry(redis, prefix)
            world.collector.registry = registry
            if case["adapted"]:  # an adapter promoted under v1 serves it
                record = ActiveRecord(
                    adapter_id="v1-a",
                    epoch=1,
                    action="promote",
                    actor="trainer",
                    reason="gate passed",
                    at=NOW - 60,
                    policy_version="v1",
                )
                await redis.set(f"{prefix}:adapter:active:v1", record.model_dump_json())
        world.collector.history["alice"] = case.get("history", MIN_HISTORY)
        world.collector.overlap_rate = 0.0
        label = _signed(world.alice, _doc(label=case.get("label", "violating")))
        result = await world.collector.handle([_record(label)])
        # counted on the collector's metrics too, by why
        for why, n in result.second_opinion_why.items():
            sample = world.metrics.registry.get_sample_value(
                "borderline_second_opinions_total", {"why": why}
            )
            assert sample == n, (why, sample, n)
        return result

    out: CollectResult = run_redis(body)
    return out


def _second_opinions(run_redis: Any, prefix: str, **case: Any) -> list[list[str]]:
    return [r.already_labeled_by for r in _collect(run_redis, prefix, **case).second_opinions]


def _why(run_redis: Any, prefix: str, **case: Any) -> dict[str, int]:
    return dict(_collect(run_redis, prefix, **case).second_opinion_why)


def test_one_label_that_agrees_with_the_model_is_enough(run_redis: Any, prefix: str) -> None:
    assert _second_opinions(run_redis, prefix) == []


@pytest.mark.parametrize(("p", "label"), [(0.9, "benign"), (0.1, "violating")])
def test_one_label_against_the_models_decision_asks_for_a_second(
    run_redis: Any, prefix: str, p: float, label: str
) -> None:
    assert _second_opinions(run_redis, prefix, p=p, label=label) == [["alice"]]
    # the same, where an adapter promoted under the policy serves it
    adapted = _second_opinions(run_redis, f"{prefix}-a", p=p, label=label, adapted=True)
    assert adapted == [["alice"]]


def test_one_label_against_a_model_not_adapted_to_the_policy_is_enough(
    run_redis: Any, prefix: str
) -> None:
    """Under a policy no adapter was promoted for yet (just published: the previous policy's
    adapter still serves), the model's decision is no check on a reviewer: it was trained for
    other rules. Seen in `bench adapt`: after v2 made promotional mail violating, most second
    opinions were experts saying "violating" where the v1 adapter allowed."""
    assert _second_opinions(run_redis, prefix, p=0.9, label="benign", adapted=False) == []
    # a new reviewer is still checked
    new = _second_opinions(run_redis, f"{prefix}-n", p=0.9, adapted=False, history=3)
    assert new == [["alice"]]


def test_one_label_against_the_models_leaning_in_the_band_is_enough(
    run_redis: Any, prefix: str
) -> None:
    # 0.6 is in v1's review band [0.3, 0.7]: the model decided nothing there
    assert _second_opinions(run_redis, prefix, label="benign") == []


def test_a_new_reviewers_label_asks_for_a_second(run_redis: Any, prefix: str) -> None:
    assert _second_opinions(run_redis, prefix, history=3) == [["alice"]]


def test_an_audit_draw_asked_for_two_already(run_redis: Any, prefix: str) -> None:
    assert _second_opinions(run_redis, prefix, audit=True, label="benign") == []


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ({"p": 0.9, "label": "benign"}, {"model": 1}),
        ({"history": 3}, {"new_reviewer": 1}),
        ({}, {}),
    ],
)
def test_why_each_second_opinion_was_asked_is_counted(
    run_redis: Any, prefix: str, case: dict[str, Any], why: dict[str, int]
) -> None:
    assert _why(run_redis, prefix, **case) == why


def test_a_label_only_from_an_excluded_reviewer_asks_for_a_trusted_one(
    run_redis: Any, prefix: str
) -> None:
    async def body(redis: Redis) -> CollectResult:
        world = await _world(redis, prefix)
        await world.store.set_excluded(["alice"])
        label = _signed(world.alice, _doc(label="violating"))
        return await world.collector.handle([_record(label)])

    result = run_redis(body)
    assert [r.already_labeled_by for r in result.second_opinions] == [["alice"]]
    assert result.second_opinion_why == {"untrusted": 1}
