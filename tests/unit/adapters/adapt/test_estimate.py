"""Unit tests for adapters.adapt.estimate: the weighted kappa is scikit-learn's, every bootstrap
resample is too, the interval covers the point, too few items give words and no number, the
paired difference, the draw weights, and malformed input refused."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from adapters.adapt.estimate import (
    Estimate,
    EstimateError,
    _resampled_kappas,
    draw_weight,
    estimate_kappa,
    paired_difference,
)

V, B = "violating", "benign"


def _labels(n: int, seed: int, error: float = 0.1) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    expert = np.array([V, B])[rng.integers(0, 2, n)]
    wrong = rng.random(n) < error
    model = np.where(wrong, np.where(expert == V, B, V), expert)
    return [str(x) for x in expert], [str(x) for x in model]


def test_every_resample_is_scikit_learns_weighted_kappa() -> None:
    expert, model = _labels(40, seed=1)
    weights = np.random.default_rng(2).uniform(1, 20, 40)
    codes = {B: 0, V: 1}
    e = np.array([codes[x] for x in expert])
    m = np.array([codes[x] for x in model])
    draws = np.random.default_rng(3).integers(0, 40, size=(20, 40))
    ours = _resampled_kappas(e, m, weights, draws, 2)
    for row, value in zip(draws, ours, strict=True):
        expected = cohen_kappa_score(e[row], m[row], sample_weight=weights[row])
        assert value == pytest.approx(expected, abs=1e-12)


def test_a_one_label_resample_is_undefined_not_a_number() -> None:
    e, m = np.array([0, 0, 1]), np.array([0, 0, 1])
    draws = np.array([[0, 1, 0], [0, 1, 2]])
    ours = _resampled_kappas(e, m, np.ones(3), draws, 2)
    assert np.isnan(ours[0]) and ours[1] == pytest.approx(1.0)


def test_the_interval_covers_the_point_and_narrows_with_more_items() -> None:
    small = estimate_kappa(*_labels(60, seed=4), min_items=30, seed=0)
    large = estimate_kappa(*_labels(600, seed=4), min_items=30, seed=0)
    for e in (small, large):
        assert e.low is not None and e.high is not None and e.value is not None
        assert e.low <= e.value <= e.high
    assert large.high - large.low < small.high - small.low  # type: ignore[operator]
    assert small == estimate_kappa(*_labels(60, seed=4), min_items=30, seed=0)  # seeded


def test_too_few_items_give_words_not_a_number() -> None:
    e = estimate_kappa(*_labels(12, seed=5), min_items=30)
    assert (e.value, e.low, e.high, e.enough) == (None, None, None, False)
    assert e.describe() == "not enough audit labels (12 of 30)"


def test_one_label_only_is_undefined() -> None:
    e = estimate_kappa([V] * 40, [V] * 40, min_items=30)
    assert e.value is None and e.describe() == "undefined on 40 audit labels (one label only)"
    d = paired_difference([V] * 40, [V] * 40, [B] * 40, min_items=30)
    assert d.value is None


def test_an_undefined_incumbent_leaves_the_difference_undefined() -> None:
    assert estimate_kappa([V], [B], min_items=1, resamples=10).value == 0.0  # two labels occur
    assert paired_difference([V], [B], [V], min_items=1, resamples=10).value is None


def test_the_paired_difference_cancels_what_both_share() -> None:
    expert, model = _labels(80, seed=6, error=0.2)
    same = paired_difference(expert, model, model, min_items=30)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    better = paired_difference(expert, expert, model, min_items=30)
    assert better.value is not None and better.low is not None and better.low > 0
    few = paired_difference(expert[:10], expert[:10], model[:10], min_items=30)
    assert few.describe() == "not enough audit labels (10 of 30)"


def test_draw_weights() -> None:
    assert draw_weight(True, 0.25, "uncertain", default_rate=0.02) == 4.0
    assert draw_weight(True, None, "boundary", default_rate=0.02) == 50.0
    assert draw_weight(False, None, "audit", default_rate=0.1) == 10.0  # before draws were marked
    assert draw_weight(False, 0.1, "boundary", default_rate=0.1) is None
    assert draw_weight(True, 0.0, "audit", default_rate=0.1) is None


def test_describe_and_as_dict() -> None:
    e = Estimate(0.5, 0.4, 0.6, 50, 30, 0.9)
    assert e.enough and e.describe() == "0.500 (90% CI 0.400 to 0.600, 50 audit labels)"
    assert e.as_dict()["confidence"] == 0.9


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: estimate_kappa([V], [V, B], min_items=1), "model labels"),
        (lambda: estimate_kappa([V], [V], [1.0, 2.0], min_items=1), "weights"),
        (lambda: estimate_kappa([V], [V], [0.0], min_items=1), "positive"),
        (lambda: estimate_kappa([V], [V], min_items=0), "min_items"),
        (lambda: estimate_kappa([V], [V], min_items=1, confidence=1.0), "confidence"),
        (lambda: estimate_kappa([V], [V], min_items=1, resamples=2), "resamples"),
        (lambda: paired_difference([V], [V], [V, B], min_items=1), "model labels"),
    ],
)
def test_malformed_input_is_refused(call: object, match: str) -> None:
    with pytest.raises(EstimateError, match=match):
        call()  # type: ignore[operator]


def test_a_sample_whose_resamples_all_have_one_label_has_no_number() -> None:
    """Two items, ten resamples: with this seed every resample drew one item twice, so no
    resample has a kappa and there is no interval to give."""
    assert estimate_kappa([V, B], [V, B], min_items=1, resamples=10, seed=1256).value is None
    assert (
        paired_difference([V, B], [V, B], [V, V], min_items=1, resamples=10, seed=1256).value
        is None
    )
