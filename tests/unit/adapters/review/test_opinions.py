"""Second opinions for a sample, not for every request (issue 11, item 5)."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.review.opinions import (
    MIN_HISTORY,
    first_opinions,
    in_overlap_sample,
    labels_per_item,
    second_opinion_why,
)

SEASONED = {"ann": MIN_HISTORY, "bob": MIN_HISTORY + 5}


def test_audit_draws_always_get_two_opinions() -> None:
    ids = [f"item-{i}" for i in range(200)]
    assert all(first_opinions(i, audit_drawn=True, overlap_rate=0.0, seed=0) == 2 for i in ids)
    assert all(first_opinions(i, audit_drawn=False, overlap_rate=0.0, seed=0) == 1 for i in ids)


def test_the_overlap_sample_is_seeded_and_near_its_rate() -> None:
    ids = [f"item-{i}" for i in range(4000)]
    drawn = [in_overlap_sample(i, rate=0.1, seed=3) for i in ids]
    assert 0.085 < np.mean(drawn) < 0.115
    assert drawn == [in_overlap_sample(i, rate=0.1, seed=3) for i in ids]  # redelivery: same
    assert drawn != [in_overlap_sample(i, rate=0.1, seed=4) for i in ids]
    assert [first_opinions(i, audit_drawn=False, overlap_rate=0.1, seed=3) for i in ids] == [
        2 if d else 1 for d in drawn
    ]
    with pytest.raises(ValueError, match="overlap rate"):
        in_overlap_sample("x", rate=1.5, seed=0)


def test_a_single_opinion_that_disagrees_with_the_model_asks_for_a_second() -> None:
    assert second_opinion_why({"ann": "violating"}, model_label="benign", history=SEASONED) == (
        "model"
    )
    assert second_opinion_why({"ann": "benign"}, model_label="benign", history=SEASONED) is None
    # model decision unknown: only the history decides
    assert second_opinion_why({"ann": "benign"}, model_label=None, history=SEASONED) is None


def test_a_new_reviewers_single_opinion_asks_for_a_second() -> None:
    history = {"ann": MIN_HISTORY - 1}
    new = "new_reviewer"
    assert second_opinion_why({"ann": "benign"}, model_label="benign", history=history) == new
    assert second_opinion_why({"zed": "benign"}, model_label="benign", history={}) == new
    assert (
        second_opinion_why({"ann": "benign"}, model_label="benign", history=history, min_history=5)
        is None
    )


def test_only_items_with_exactly_one_counted_opinion_are_judged_here() -> None:
    two = {"ann": "benign", "bob": "violating"}
    assert second_opinion_why(two, model_label="benign", history={}) is None
    assert second_opinion_why({}, model_label="benign", history={}) is None
    # an excluded reviewer's vote and an empty label do not count: one counted opinion left
    votes = {"ann": "violating", "randy": "benign", "bob": ""}
    why = second_opinion_why(votes, model_label="benign", history=SEASONED, exclude={"randy"})
    assert why == "model"
    alone = {"randy": "violating"}
    assert second_opinion_why(alone, model_label="benign", history={}, exclude={"randy"}) is None


def test_the_rule_spends_about_one_and_a_half_labels_per_item() -> None:
    """A simulated stream: 15% audit draws, a 10% overlap sample, a model that disagrees with
    the first expert on 25% of the items it sent to review, seasoned reviewers."""
    rng = np.random.default_rng(0)
    spent = 0
    items = 5000
    for i in range(items):
        first = first_opinions(
            f"i{i}", audit_drawn=bool(rng.random() < 0.15), overlap_rate=0.1, seed=0
        )
        spent += first
        if first == 1:
            model = "benign" if rng.random() < 0.75 else "violating"
            if second_opinion_why({"ann": "benign"}, model_label=model, history=SEASONED):
                spent += 1
    assert 1.35 < labels_per_item(spent, items) < 1.55  # every request at 2: 2.0


def test_labels_per_item() -> None:
    assert labels_per_item(0, 0) is None
    assert labels_per_item(3, 2) == 1.5
