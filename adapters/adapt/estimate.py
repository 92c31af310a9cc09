"""Unbiased agreement figures from the audit sample: Cohen's kappa of a model against expert
consensus, weighted by the inverse of each item's audit draw probability, with a seeded
bootstrap interval, and the paired bootstrap of a difference of two models on the same items.

Why the audit sample only: the items that reach experts for any other reason were chosen because
a model was unsure of them, so a kappa computed on them says how hard those items are, not how
good the model is. The audit draw is uniform (each scored item is drawn with the policy's
`audit_rate`, see `adapters.review.window.audit_draw`), so the weighted kappa over the drawn and
labelled items estimates the kappa over the whole stream.

Below ``min_items`` no number is given: `Estimate.describe` says "not enough audit labels (n of
m)". The point estimate is scikit-learn's `cohen_kappa_score` with ``sample_weight`` (through
`adapters.labels.agreement.kappa`); the bootstrap resamples are computed here, vectorised over
the confusion matrices (no library bootstraps a weighted kappa of several label arrays in one
pass), and checked against scikit-learn in the unit tests. Pure: no I/O, ``seed`` is an argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from adapters.labels.agreement import kappa
from models.errors import BorderlineError

__all__ = [
    "CONFIDENCE",
    "RESAMPLES",
    "Estimate",
    "EstimateError",
    "draw_weight",
    "estimate_kappa",
    "paired_difference",
]

CONFIDENCE = 0.9
"""Two-sided coverage of the intervals: each bound is a one-sided 95% bound, the usual level for
"the evidence says at least ..." on the few dozen audit labels a policy gathers in an hour."""

RESAMPLES = 1000


class EstimateError(BorderlineError):
    """Label and weight lists of different lengths, a weight that is not positive, a bad
    confidence or resample count."""


@dataclass(frozen=True)
class Estimate:
    """A kappa (or a difference of kappas) on ``items`` audit labels, with its interval at
    ``confidence``; ``value`` is None when there are fewer than ``needed`` items or the kappa is
    undefined (one label only), and ``low``/``high`` are then None too.

    >>> Estimate(0.84, 0.79, 0.89, 120, 30, 0.9).describe()
    '0.840 (90% CI 0.790 to 0.890, 120 audit labels)'
    >>> Estimate(None, None, None, 12, 30, 0.9).describe()
    'not enough audit labels (12 of 30)'
    """

    value: float | None
    low: float | None
    high: float | None
    items: int
    needed: int
    confidence: float

    @property
    def enough(self) -> bool:
        return self.value is not None

    def describe(self) -> str:
        if self.items < self.needed:
            return f"not enough audit labels ({self.items} of {self.needed})"
        if self.value is None or self.low is None or self.high is None:
            return f"undefined on {self.items} audit labels (one label only)"
        return (
            f"{self.value:.3f} ({self.confidence:.0%} CI {self.low:.3f} to {self.high:.3f}, "
            f"{self.items} audit labels)"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values.

        >>> Estimate(None, None, None, 0, 30, 0.9).as_dict()["items"]
        0
        """
        return asdict(self)


def draw_weight(
    audit_drawn: bool, audit_rate: float | None, reason: str, *, default_rate: float
) -> float | None:
    """An item's inverse-probability weight in the audit sample (1 / its draw probability), or
    None when the audit did not draw it. Requests recorded before draws were marked count when
    their reason is ``audit``; a missing rate is ``default_rate`` (the configured one).

    >>> draw_weight(True, 0.08, "uncertain", default_rate=0.02)
    12.5
    >>> draw_weight(False, 0.08, "uncertain", default_rate=0.02) is None
    True
    >>> draw_weight(False, None, "audit", default_rate=0.05)
    20.0
    """
    if not (audit_drawn or reason == "audit"):
        return None
    rate = default_rate if audit_rate is None else audit_rate
    return 1.0 / rate if rate > 0 else None


def _checked(
    expert: Sequence[str], models: Sequence[Sequence[str]], weights: Sequence[float] | None
) -> np.ndarray:
    n = len(expert)
    for labels in models:
        if len(labels) != n:
            raise EstimateError(f"{n} expert labels but {len(labels)} model labels")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise EstimateError(f"{n} expert labels but {w.size} weights")
    if n and not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise EstimateError("weights must be finite and positive (1 / draw probability)")
    return w


def _check_knobs(min_items: int, confidence: float, resamples: int) -> None:
    if min_items < 1:
        raise EstimateError(f"min_items must be at least 1, got {min_items}")
    if not (math.isfinite(confidence) and 0.0 < confidence < 1.0):
        raise EstimateError(f"confidence must lie in (0, 1), got {confidence!r}")
    if resamples < 10:
        raise EstimateError(f"resamples must be at least 10, got {resamples}")


def _codes(*label_lists: Sequence[str]) -> tuple[list[np.ndarray], int]:
    names = sorted({label for labels in label_lists for label in labels})
    index = {name: i for i, name in enumerate(names)}
    return [np.array([index[x] for x in labels], dtype=np.int64) for labels in label_lists], len(
        names
    )


def _resampled_kappas(
    expert: np.ndarray, model: np.ndarray, w: np.ndarray, draws: np.ndarray, k: int
) -> np.ndarray:
    """Weighted kappa of every resample (rows of ``draws``: item indices), NaN where undefined."""
    rows = draws.shape[0]
    cell = expert[draws] * k + model[draws] + (np.arange(rows) * k * k)[:, None]
    counts = np.bincount(cell.ravel(), weights=w[draws].ravel(), minlength=rows * k * k)
    matrix = counts.reshape(rows, k, k)
    total = matrix.sum(axis=(1, 2))
    observed = np.trace(matrix, axis1=1, axis2=2) / total
    expected = (matrix.sum(axis=2) * matrix.sum(axis=1)).sum(axis=1) / total**2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (observed - expected) / (1.0 - expected)
    out[np.isclose(expected, 1.0)] = np.nan
    return np.asarray(out, dtype=np.float64)


def _bounds(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    kept = samples[np.isfinite(samples)]
    if kept.size == 0:
        return None, None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(kept, [tail, 1.0 - tail])
    return float(low), float(high)


def estimate_kappa(
    expert: Sequence[str],
    model: Sequence[str],
    weights: Sequence[float] | None = None,
    *,
    min_items: int,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """The inverse-probability-weighted kappa of ``model`` against ``expert`` on audit-drawn
    items (``weights``: 1 / draw probability of each; None: equal), with a percentile bootstrap
    interval (resampling items, seeded). Fewer than ``min_items`` items: no number.

    >>> expert = ["violating", "benign"] * 20
    >>> e = estimate_kappa(expert, expert[:-2] + ["benign", "violating"], min_items=30)
    >>> round(e.value, 3), e.items, e.low < e.value <= e.high
    (0.9, 40, True)
    >>> estimate_kappa(expert[:10], expert[:10], min_items=30).describe()
    'not enough audit labels (10 of 30)'
    """
    w = _checked(expert, [model], weights)
    _check_knobs(min_items, confidence, resamples)
    n = len(expert)
    if n < min_items:
        return Estimate(None, None, None, n, min_items, confidence)
    value = kappa(list(expert), list(model), sample_weight=w)
    if value is None:
        return Estimate(None, None, None, n, min_items, confidence)
    (e, m), k = _codes(expert, model)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    low, high = _bounds(_resampled_kappas(e, m, w, draws, k), confidence)
    if low is None:
        return Estimate(None, None, None, n, min_items, confidence)
    return Estimate(value, low, high, n, min_items, confidence)


def paired_difference(
    expert: Sequence[str],
    candidate: Sequence[str],
    incumbent: Sequence[str],
    weights: Sequence[float] | None = None,
    *,
    min_items: int,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """kappa(candidate) - kappa(incumbent) on the same items, with a paired bootstrap interval:
    each resample draws the same items for both, so what the two share (the items' difficulty)
    cancels and the interval is that of the difference alone. No number below ``min_items`` or
    where either kappa is undefined.

    >>> expert = ["violating", "benign"] * 25
    >>> worse = ["benign"] * 10 + expert[10:]
    >>> d = paired_difference(expert, expert, worse, min_items=30)
    >>> round(d.value, 3), d.low > 0
    (0.2, True)
    """
    w = _checked(expert, [candidate, incumbent], weights)
    _check_knobs(min_items, confidence, resamples)
    n = len(expert)
    if n < min_items:
        return Estimate(None, None, None, n, min_items, confidence)
    ours = kappa(list(expert), list(candidate), sample_weight=w)
    theirs = kappa(list(expert), list(incumbent), sample_weight=w)
    if ours is None or theirs is None:
        return Estimate(None, None, None, n, min_items, confidence)
    (e, c, i), k = _codes(expert, candidate, incumbent)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    diffs = _resampled_kappas(e, c, w, draws, k) - _resampled_kappas(e, i, w, draws, k)
    low, high = _bounds(diffs, confidence)
    if low is None:
        return Estimate(None, None, None, n, min_items, confidence)
    return Estimate(ours - theirs, low, high, n, min_items, confidence)
