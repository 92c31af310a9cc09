"""The gate: a candidate adapter goes live only when it agrees with the experts better than
the incumbent does, by Cohen's kappa on the held-out evaluation split, on enough items.

Pure decisions, no I/O: `evaluate` writes the report the registry keeps with the candidate,
`should_roll_back` decides whether a promoted adapter goes back on fresh expert labels. Kappa
comes from `adapters.agreement.kappa` (scikit-learn); where it is undefined (one label only)
that is not enough evidence, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from adapters.labels.agreement import kappa
from models.errors import BorderlineError

__all__ = ["GateConfig", "GateError", "GateReport", "evaluate", "should_roll_back"]

TOLERANCE = 1e-9
"""Kappas are compared with this slack, so a candidate exactly at the requirement passes
whatever the rounding of `incumbent_kappa + margin` (0.1 + 0.2 is not 0.3 in floating point)."""


class GateError(BorderlineError):
    """The gate was asked something malformed: a bad configuration, label lists of different
    lengths, an agreement figure outside its range."""


def _kappa_range(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise GateError(f"{name} must lie in [-1, 1], got {value!r}")


@dataclass(frozen=True)
class GateConfig:
    """`min_kappa`: the floor every live model must reach; `margin`: how much a candidate must
    beat the incumbent by (negative makes it a non-inferiority test); `min_eval_items`: the
    fewest evaluation items that count as evidence.

    >>> GateConfig(min_kappa=0.8).margin
    0.02
    """

    min_kappa: float = 0.7
    margin: float = 0.02
    min_eval_items: int = 50

    def __post_init__(self) -> None:
        _kappa_range("min_kappa", self.min_kappa)
        if not math.isfinite(self.margin) or abs(self.margin) > 2.0:
            raise GateError(f"margin must be finite and within [-2, 2], got {self.margin!r}")
        if isinstance(self.min_eval_items, bool) or self.min_eval_items < 1:
            raise GateError(f"min_eval_items must be at least 1, got {self.min_eval_items!r}")


@dataclass(frozen=True)
class GateReport:
    """The gate's verdict on one candidate, kept with it whether it passed or not.

    `required_kappa` is max(min_kappa, incumbent_kappa + margin), or min_kappa alone when there
    is no incumbent or its kappa is undefined; `expert_ceiling` is the experts' own pairwise
    kappa (Light's kappa), what a model can hope to reach; `shadow_agreement` is the share of
    recent live items on which candidate and incumbent decide the same. Both are recorded, not
    gated on.
    """

    passed: bool
    reason: str
    candidate_kappa: float | None
    incumbent_kappa: float | None
    required_kappa: float | None
    eval_items: int
    expert_ceiling: float | None
    shadow_agreement: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, field by field.

        >>> GateReport(False, "no items", None, None, 0.7, 0, None, None).as_dict()["passed"]
        False
        """
        return asdict(self)


def _coded_kappa(left: Sequence[str], right: Sequence[str]) -> float | None:
    # label names -> integer codes for `kappa`; Cohen's kappa does not depend on the coding
    codes = {label: index for index, label in enumerate(sorted({*left, *right}))}
    return kappa([codes[label] for label in left], [codes[label] for label in right])


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def evaluate(
    expert: Sequence[str],
    candidate: Sequence[str],
    incumbent: Sequence[str] | None,
    *,
    config: GateConfig,
    expert_ceiling: float | None = None,
    shadow_agreement: float | None = None,
) -> GateReport:
    """Judge a candidate by its Cohen's kappa against expert consensus on the evaluation split.

    `expert`, `candidate` and `incumbent` are labels of the same evaluation items, in the same
    order (the incumbent's may be None: no adapter is live yet). The candidate passes when the
    evaluation set has at least `config.min_eval_items` items, its kappa is defined, and the
    kappa is at least the required one (equal passes). Otherwise `reason` says which rule
    failed; too few items and an undefined kappa read "not enough evidence".

    >>> expert = ["violating", "benign"] * 30
    >>> report = evaluate(expert, expert, ["benign"] * 60, config=GateConfig())
    >>> report.passed, report.candidate_kappa, report.incumbent_kappa, report.required_kappa
    (True, 1.0, 0.0, 0.7)
    >>> evaluate(expert[:10], expert[:10], None, config=GateConfig()).reason
    'not enough evidence: 10 evaluation items, at least 50 needed'
    """
    items = len(expert)
    if len(candidate) != items:
        raise GateError(f"{items} expert labels but {len(candidate)} candidate labels")
    if incumbent is not None and len(incumbent) != items:
        raise GateError(f"{items} expert labels but {len(incumbent)} incumbent labels")
    _kappa_range("expert_ceiling", expert_ceiling)
    if shadow_agreement is not None and not 0.0 <= shadow_agreement <= 1.0:
        raise GateError(f"shadow_agreement must lie in [0, 1], got {shadow_agreement!r}")

    candidate_kappa = _coded_kappa(expert, candidate)  # None on no items, as on one label
    incumbent_kappa = None if incumbent is None else _coded_kappa(expert, incumbent)
    if incumbent_kappa is None:
        required = config.min_kappa
        basis = f"min_kappa {_fmt(config.min_kappa)}" + (
            ", no incumbent" if incumbent is None else ", incumbent kappa undefined"
        )
    else:
        required = max(config.min_kappa, incumbent_kappa + config.margin)
        basis = (
            f"incumbent {_fmt(incumbent_kappa)} + margin {_fmt(config.margin)}"
            if incumbent_kappa + config.margin >= config.min_kappa
            else f"min_kappa {_fmt(config.min_kappa)}, above incumbent {_fmt(incumbent_kappa)}"
            f" + margin {_fmt(config.margin)}"
        )

    if items < config.min_eval_items:
        passed = False
        needed = config.min_eval_items
        reason = f"not enough evidence: {items} evaluation items, at least {needed} needed"
    elif candidate_kappa is None:
        passed = False
        reason = (
            f"not enough evidence: candidate kappa undefined on {items} evaluation items"
            " (one label only among expert and candidate labels)"
        )
    elif candidate_kappa >= required - TOLERANCE:
        passed = True
        reason = f"passed: candidate kappa {_fmt(candidate_kappa)} >= required {_fmt(required)}"
        reason += f" ({basis})"
    else:
        passed = False
        reason = f"failed: candidate kappa {_fmt(candidate_kappa)} < required {_fmt(required)}"
        reason += f" ({basis})"

    return GateReport(
        passed=passed,
        reason=reason,
        candidate_kappa=candidate_kappa,
        incumbent_kappa=incumbent_kappa,
        required_kappa=required,
        eval_items=items,
        expert_ceiling=expert_ceiling,
        shadow_agreement=shadow_agreement,
    )


def should_roll_back(
    live_kappa: float | None, *, min_kappa: float, min_items: int, items: int
) -> bool:
    """Whether the live adapter goes back: its kappa on fresh expert labels is defined, rests
    on at least `min_items` items, and is below `min_kappa` (equal stays). An undefined kappa
    or too few items is not enough evidence to act on, so the adapter stays.

    >>> should_roll_back(0.55, min_kappa=0.7, min_items=50, items=80)
    True
    >>> should_roll_back(0.55, min_kappa=0.7, min_items=50, items=20)
    False
    >>> should_roll_back(None, min_kappa=0.7, min_items=50, items=80)
    False
    """
    _kappa_range("live_kappa", live_kappa)
    _kappa_range("min_kappa", min_kappa)
    if min_items < 1 or items < 0:
        raise GateError(
            f"min_items must be at least 1 and items at least 0, got {min_items}, {items}"
        )
    return live_kappa is not None and items >= min_items and live_kappa < min_kappa - TOLERANCE
