"""Unit tests for adapters.agreement.kappa: it is scikit-learn's Cohen's kappa where kappa is
defined, and None ("not enough evidence") where it is not."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

import adapters.labels.agreement
import adapters.labels.consensus
from adapters.labels.agreement import kappa


def _raters(seed: int, n: int, labels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, labels, size=n)
    agree = rng.random(n) < 0.7
    b = np.where(agree, a, rng.integers(0, labels, size=n))
    return a, b


@pytest.mark.parametrize(("seed", "labels"), [(0, 2), (1, 2), (2, 3), (3, 5)])
def test_equals_sklearn_on_random_data(seed: int, labels: int) -> None:
    a, b = _raters(seed, 300, labels)
    expected = cohen_kappa_score(a, b)
    value = kappa(a, b)
    assert value is not None
    assert value == pytest.approx(expected, abs=1e-12)
    assert 0.3 < value < 0.9  # the data agree 70% of the time: a real, non-trivial figure


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_sklearn_with_sample_weight(seed: int) -> None:
    a, b = _raters(seed, 300, 2)
    weights = np.random.default_rng(seed + 100).random(300)
    expected = cohen_kappa_score(a, b, sample_weight=weights)
    assert expected != pytest.approx(cohen_kappa_score(a, b))  # the weights matter here
    assert kappa(a, b, sample_weight=weights) == pytest.approx(expected, abs=1e-12)


def test_accepts_plain_lists() -> None:
    assert kappa([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx(0.5)


def test_perfect_agreement_is_one() -> None:
    assert kappa([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("a", "b"),
    [([], []), ([1, 1, 1], [1, 1, 1]), ([0], [0]), (np.zeros(50, int), np.zeros(50, int))],
    ids=["empty", "both-constant-1", "single", "both-constant-0"],
)
def test_undefined_is_none(a: list[int], b: list[int]) -> None:
    assert kappa(a, b) is None


@pytest.mark.filterwarnings("error")
def test_weights_that_leave_one_label_are_undefined() -> None:
    # two labels occur, but the weights drop every item carrying the second one
    assert kappa([0, 1, 0], [0, 1, 0], sample_weight=[1.0, 0.0, 1.0]) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [([1, 1, 1, 1], [1, 0, 1, 0]), ([0, 1, 0, 1], [0, 0, 0, 0]), ([1, 1, 1], [0, 0, 0])],
)
def test_one_constant_rater_is_defined(a: list[int], b: list[int]) -> None:
    value = kappa(a, b)
    assert value is not None
    assert not math.isnan(value)
    assert value == pytest.approx(cohen_kappa_score(a, b))


@pytest.mark.parametrize(("a", "b"), [([0, 1, 1], [0, 1]), ([[0, 1]], [0, 1])])
def test_shape_mismatch_raises(a: list[int], b: list[int]) -> None:
    with pytest.raises(ValueError, match="shape"):
        kappa(a, b)


def test_doctest() -> None:
    results = [
        doctest.testmod(m)
        for m in (
            adapters.labels.agreement,
            adapters.labels.consensus,
        )
    ]
    assert sum(r.attempted for r in results) > 0
    assert sum(r.failed for r in results) == 0
