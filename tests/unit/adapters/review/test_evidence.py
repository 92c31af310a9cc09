"""The evidence a review request carries, checked against cosine similarities computed here with
plain numpy: the nearest labelled neighbours (odd inputs refused by name), and after a policy
change the live items nearest the policy's examples, most similar first, within the budget and
above the similarity floor."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.review.evidence import near_examples, nearest_labelled
from adapters.review.selectors import CurationError, Reason


def _angles(*radians: float) -> np.ndarray:
    return np.c_[np.cos(radians), np.sin(radians)]


def test_nearest_labelled_refuses_a_flat_query_and_mismatched_labels() -> None:
    with pytest.raises(CurationError, match=r"query has shape \(2,\), expected \(rows, dim\)"):
        nearest_labelled(np.ones(2), ["a"], np.ones((1, 2)), ["ok"])
    with pytest.raises(CurationError, match="1 labels for 2 labelled ids"):
        nearest_labelled(np.ones((1, 2)), ["a", "b"], np.ones((2, 2)), ["ok"])


def test_nearest_labelled_of_no_query_rows_is_empty() -> None:
    assert nearest_labelled(np.zeros((0, 2)), ["a"], np.ones((1, 2)), ["ok"]) == []


def test_items_nearest_the_examples_come_first_within_budget_and_floor() -> None:
    items = ["a", "b", "c", "d", "e"]
    embeddings = _angles(0.0, 0.2, 0.9, 1.3, 3.0) * [[1.0], [3.0], [0.5], [2.0], [1.0]]
    examples = _angles(0.25, 1.4)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    # the reference: each item's best cosine similarity to any example
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    best = (unit @ examples.T).max(axis=1)
    expected = [items[i] for i in np.argsort(-best) if best[i] >= 0.5]
    assert expected == ["b", "d", "a", "c"]  # "e" points away from both examples

    got = near_examples(items, embeddings, p, examples, budget=10)
    assert [c.item_id for c in got] == expected
    assert all(c.reason is Reason.POLICY_CHANGE for c in got)
    assert [c.priority for c in got] == pytest.approx(sorted(best[best >= 0.5], reverse=True))
    assert [c.p_violating for c in got] == [0.2, 0.4, 0.1, 0.3]

    two = near_examples(items, embeddings, p, examples, budget=2)
    assert [c.item_id for c in two] == ["b", "d"]
    floor = float(best[items.index("a")]) + 1e-9  # just above a's similarity
    strict = near_examples(items, embeddings, p, examples, budget=10, min_similarity=floor)
    assert [c.item_id for c in strict] == ["b", "d"]


def test_near_examples_with_nothing_to_compare_is_empty() -> None:
    e = np.eye(2)
    p = np.array([0.5, 0.5])
    assert near_examples([], np.zeros((0, 2)), np.zeros(0), e, budget=3) == []
    assert near_examples(["a", "b"], e, p, e, budget=0) == []
    assert near_examples(["a", "b"], e, p, np.zeros((0, 2)), budget=3) == []
    with pytest.raises(CurationError, match="not a probability"):
        near_examples(["a", "b"], e, np.array([0.5, 1.5]), e, budget=3)
