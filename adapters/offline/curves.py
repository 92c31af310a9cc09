"""Label-efficiency curves: aggregation over seeds, the labels each strategy needs to reach a share
of the full-data reference, and the multiplier against random."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["TARGET_SHARE", "aggregate", "labels_to_target", "multiplier"]


TARGET_SHARE = 0.95


def seed_spread(values: Sequence[float | None]) -> dict[str, Any]:
    defined = [v for v in values if v is not None]
    if not defined:
        return {"kappa": None, "spread": None}
    arr = np.asarray(defined, dtype=np.float64)
    return {
        "kappa": round(float(arr.mean()), 4),
        "spread": {
            "std": round(float(arr.std(ddof=1)) if arr.size > 1 else 0.0, 4),
            "min": round(float(arr.min()), 4),
            "max": round(float(arr.max()), 4),
            "undefined": len(values) - len(defined),
        },
    }


def aggregate(
    per_seed: Mapping[int, Mapping[int, float | None]], source: Mapping[int, str] | str
) -> list[dict[str, Any]]:
    """Curve points from {seed: {labels: kappa}}: mean and spread over seeds, per label count."""
    counts = sorted({n for points in per_seed.values() for n in points})
    out = []
    for n in counts:
        values = [points.get(n) for points in per_seed.values() if n in points]
        kind = source if isinstance(source, str) else source[n]
        out.append(
            {
                "labels": n,
                **seed_spread(values),
                "per_seed": [None if v is None else round(v, 4) for v in values],
                "kappa_source": kind,
            }
        )
    return out


def labels_to_target(
    curve: Sequence[Mapping[str, Any]],
    references: Mapping[str, float | None],
    share: float = TARGET_SHARE,
) -> int | None:
    """The smallest label count from which the mean kappa stays at or above `share` of the
    reference of the same kappa source at every larger measured count (a first crossing of a
    noisy curve that falls again does not count); None when the last point is below, or a
    reference is undefined or not positive, or a point's kappa is undefined.

    >>> curve = [{"labels": 50, "kappa": 0.9, "kappa_source": "lora"},
    ...          {"labels": 100, "kappa": 0.5, "kappa_source": "lora"},
    ...          {"labels": 200, "kappa": 0.9, "kappa_source": "lora"}]
    >>> labels_to_target(curve, {"lora": 0.92}), labels_to_target(curve, {"lora": None})
    (200, None)
    """
    found: int | None = None
    for point in sorted(curve, key=lambda pt: pt["labels"], reverse=True):
        ref = references.get(point["kappa_source"])
        k = point.get("kappa")
        if ref is None or ref <= 0.0 or k is None or k < share * ref:
            break
        found = int(point["labels"])
    return found


def multiplier(to_target: Mapping[str, int | None], baseline: str = "random") -> float | None:
    """The baseline's labels to target over the best curated strategy's; None when either is
    undefined.

    >>> multiplier({"random": 3200, "uncertainty": 100, "boundary": 200})
    32.0
    >>> multiplier({"random": None, "uncertainty": 100}) is None
    True
    """
    base = to_target.get(baseline)
    curated = [n for s, n in to_target.items() if s != baseline and n is not None]
    if base is None or not curated:
        return None
    return round(base / min(curated), 2)


def round_figure(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
