"""The fine-tune recipe (issue 11, item 6): the optimiser steps never fall as the labels grow,
and early stopping holds out a stratified slice and keeps the best epoch's adapter."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from adapters.adapt.training import (
    MIN_VALIDATION_PER_CLASS,
    TrainingError,
    recipe_steps,
    validation_split,
)


def test_steps_never_fall_as_labels_grow() -> None:
    counts = list(range(20, 4100, 10))
    steps = [recipe_steps(n, 8) for n in counts]
    assert all(b >= a for a, b in pairwise(steps)), "steps fell"
    assert min(steps) == 100 and max(steps) == 512  # 4,090 labels: one pass of 512 batches
    # the old budget gave 50 labels 50 steps and the whole pool one pass: 100 steps at least
    assert recipe_steps(50, 8) == 100 and recipe_steps(400, 8) == 100
    more = [recipe_steps(n, 8, least_epochs=4) for n in counts]
    assert all(b >= a for a, b in pairwise(more)), "steps fell with four passes"


def test_at_least_one_pass_over_a_large_set() -> None:
    assert recipe_steps(100_000, 8) == 12_500
    with pytest.raises(TrainingError, match="cannot plan"):
        recipe_steps(0, 8)


def test_validation_split_is_stratified_disjoint_and_seeded() -> None:
    y = np.array([0] * 80 + [1] * 20)
    split = validation_split(y, 0.2, seed=3)
    assert split is not None
    train_rows, val_rows = split
    assert sorted([*train_rows, *val_rows]) == list(range(100))
    assert np.bincount(y[val_rows]).tolist() == [16, 4]
    again = validation_split(y, 0.2, seed=3)
    assert again is not None and again[1].tolist() == val_rows.tolist()
    other = validation_split(y, 0.2, seed=4)
    assert other is not None and other[1].tolist() != val_rows.tolist()


def test_no_split_when_a_class_is_too_small_or_the_share_is_zero() -> None:
    few = 12  # a fifth of it rounds to 2, below the minimum
    assert round(0.2 * few) < MIN_VALIDATION_PER_CLASS
    assert validation_split(np.array([0] * 100 + [1] * few), 0.2, seed=0) is None
    assert validation_split(np.array([0] * 50 + [1] * 50), 0.0, seed=0) is None
