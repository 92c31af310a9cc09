"""Unit tests for adapters.adapt.triggers: each trigger on its own and together in their fixed
order, the new-labels threshold at its edge, drift flag names sorted and deduplicated, and the
should-we-train-now decision with a reason naming the short figure."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.adapt.triggers import MIN_TRAIN_LABELS, Readiness, readiness, triggers

QUIET: dict[str, Any] = {
    "policy_published": False,
    "adapter_active": True,
    "train_labels": 50,
    "trained_on": 50,
    "min_new_labels": 100,
    "drift_flags": (),
    "forced": False,
}


def _fired(**changes: Any) -> list[str]:
    return triggers(**{**QUIET, **changes})


def test_nothing_triggers_on_a_quiet_world() -> None:
    assert _fired() == []


def test_a_published_policy_without_an_adapter_is_a_policy_change() -> None:
    assert _fired(policy_published=True, adapter_active=False, trained_on=0) == ["policy_change"]
    # no published policy (the configured default) or an adapter already there: no trigger
    assert _fired(policy_published=False, adapter_active=False, trained_on=0) == []
    assert _fired(policy_published=True, adapter_active=True, trained_on=0) == []


def test_a_refused_policy_change_waits_for_new_labels_before_it_trains_again() -> None:
    """Seen in `make demo`: after the stream ended, the v2 candidate was refused and the trainer
    trained the same candidate again on the same labels every 15 s (same data hash, same seed,
    same verdict). The policy change fires again once a training label more has come."""
    waiting = {"policy_published": True, "adapter_active": False}
    assert _fired(**waiting, train_labels=203, trained_on=203) == []
    assert _fired(**waiting, train_labels=204, trained_on=203) == ["policy_change"]


@pytest.mark.parametrize(
    ("train_labels", "trained_on", "expected"),
    [(150, 50, ["new_labels"]), (149, 50, []), (100, 0, ["new_labels"]), (40, 50, [])],
)
def test_new_labels_count_from_the_last_round(
    train_labels: int, trained_on: int, expected: list[str]
) -> None:
    assert _fired(train_labels=train_labels, trained_on=trained_on) == expected


def test_drift_flags_are_named_sorted_once() -> None:
    assert _fired(drift_flags=["prediction", "input", "input"]) == ["drift:input,prediction"]
    assert _fired(drift_flags={"concept"}) == ["drift:concept"]


def test_forced_and_the_fixed_order() -> None:
    assert _fired(forced=True) == ["forced"]
    every = _fired(
        policy_published=True,
        adapter_active=False,
        train_labels=200,
        trained_on=0,
        drift_flags={"input"},
        forced=True,
    )
    assert every == ["policy_change", "new_labels", "drift:input", "forced"]


def test_nothing_triggered_waits() -> None:
    assert readiness([], train_labels=500, eval_labels=500, min_eval_items=50) == Readiness(
        False, "nothing triggered"
    )


def test_too_few_training_labels_says_how_many_more() -> None:
    ready = readiness(["forced"], train_labels=15, eval_labels=500, min_eval_items=50)
    assert ready == Readiness(False, "waiting for 5 more training labels (15 of 20)")
    assert MIN_TRAIN_LABELS == 20
    fewer = readiness(
        ["forced"], train_labels=3, eval_labels=9, min_eval_items=5, min_train_labels=4
    )
    assert fewer == Readiness(False, "waiting for 1 more training labels (3 of 4)")
    assert readiness(
        ["forced"], train_labels=4, eval_labels=9, min_eval_items=5, min_train_labels=4
    ).train


def test_too_few_evaluation_labels_says_how_many_more() -> None:
    ready = readiness(["new_labels"], train_labels=80, eval_labels=38, min_eval_items=50)
    assert ready == Readiness(False, "waiting for 12 more audit evaluation labels (38 of 50)")
    # the training figure is checked first
    short_both = readiness(["new_labels"], train_labels=10, eval_labels=0, min_eval_items=50)
    assert short_both.reason.startswith("waiting for 10 more training labels")


def test_a_thin_side_of_the_audit_labels_waits_and_says_which() -> None:
    def ready(sides: tuple[int, int]) -> Readiness:
        return readiness(
            ["forced"],
            train_labels=80,
            eval_labels=60,
            min_eval_items=50,
            eval_sides=sides,
            min_per_class=5,
        )

    assert ready((4, 56)).reason == "waiting for 1 more violating audit evaluation labels (4 of 5)"
    assert ready((57, 3)).reason == "waiting for 2 more benign audit evaluation labels (3 of 5)"
    assert ready((5, 55)).train


def test_enough_of_both_trains_and_names_the_triggers() -> None:
    ready = readiness(
        ["policy_change", "drift:input"], train_labels=20, eval_labels=50, min_eval_items=50
    )
    assert ready == Readiness(True, "triggered: policy_change,drift:input")
