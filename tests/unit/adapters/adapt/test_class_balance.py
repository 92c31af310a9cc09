"""How LoRA training balances classes: loss weights for a moderate imbalance, balanced batches
drawn with replacement for a rare class (the benchmark's 1% pools), so that a rare class's few
examples do not arrive as rare 50x gradient spikes."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import adapters.adapt.training
from adapters.adapt.training import RESAMPLE_BELOW, class_balance


def test_doctests() -> None:
    result = doctest.testmod(adapters.adapt.training)
    assert result.failed == 0 and result.attempted > 0


def test_moderate_imbalance_is_weighted() -> None:
    y = np.array([0] * 70 + [1] * 30)
    weights, draw = class_balance(y, 2)
    assert draw is None and weights is not None
    # each class carries half the total loss weight
    assert weights[0] * 70 == pytest.approx(weights[1] * 30)


@pytest.mark.parametrize("positives", [1, 10, int(RESAMPLE_BELOW * 1000) - 1])
def test_rare_class_is_resampled_to_equal_shares(positives: int) -> None:
    y = np.array([0] * (1000 - positives) + [1] * positives)
    weights, draw = class_balance(y, 2)
    assert weights is None and draw is not None
    assert draw.sum() == pytest.approx(1.0)
    assert draw[y == 1].sum() == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    drawn = y[rng.choice(len(y), size=20_000, p=draw)]
    assert drawn.mean() == pytest.approx(0.5, abs=0.02)


def test_absent_class_gets_no_share() -> None:
    weights, draw = class_balance(np.array([0, 0, 2, 2, 2]), 3)
    assert draw is None and weights is not None
    assert weights[1] == 0.0
