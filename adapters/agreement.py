"""Agreement between label sources: Cohen's kappa of the model against experts (and, later,
between experts). Kappa is undefined when only one label occurs in both sources: that returns
None, which every caller reads as "not enough evidence" rather than a library's 0.0 or 1.0."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score

__all__ = ["kappa"]


def kappa(
    a: Sequence[int] | np.ndarray,
    b: Sequence[int] | np.ndarray,
    sample_weight: Sequence[float] | np.ndarray | None = None,
) -> float | None:
    """Cohen's kappa of two labelings of the same items, or None where it is undefined.

    >>> kappa([0, 1, 1, 0], [0, 1, 0, 0])
    0.5
    >>> kappa([1, 1, 1], [1, 1, 1]) is None
    True
    """
    left, right = np.asarray(a), np.asarray(b)
    if left.shape != right.shape:
        raise ValueError(f"label arrays differ in shape: {left.shape} vs {right.shape}")
    if left.size == 0 or len(set(left.tolist()) | set(right.tolist())) < 2:
        return None
    with warnings.catch_warnings():  # the undefined case is answered below, not warned about
        warnings.simplefilter("ignore")
        value = float(cohen_kappa_score(left, right, sample_weight=sample_weight))
    return None if np.isnan(value) else value
