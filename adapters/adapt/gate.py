"""The gate: a candidate adapter goes live only when the evidence says it agrees with the experts
better than the incumbent does, by Cohen's kappa on the audit-drawn labelled items of the policy
(a uniform sample of the stream, weighted by draw probability), both scored on the same items.

Pure decisions, no I/O: `evaluate` writes the report the registry keeps with the candidate,
`should_roll_back` decides whether a promoted adapter goes back on audit labels given since its
promotion, by the same paired rule. Kappa comes from `adapters.agreement.kappa` (scikit-learn),
intervals from `adapters.adapt.estimate` (seeded bootstrap). Where kappa is undefined (one label
only), or a class has too few items, that is not enough evidence, never a pass.

The rule: enough items, at least `min_per_class` of each side (benign and any violating
category), the candidate's kappa lower bound at least `min_kappa`, and the paired lower bound of
(candidate - incumbent) at least `margin`. Bounds are at `confidence` 0.9 two-sided, so each is a
one-sided 95% bound: an equal candidate passes about one time in twenty, where the point rule
(candidate >= incumbent + margin on 79 items) passed 44% of the time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from adapters.adapt.estimate import (
    CONFIDENCE,
    RESAMPLES,
    Estimate,
    estimate_kappa,
    paired_difference,
)
from models.errors import BorderlineError

__all__ = [
    "BENIGN",
    "GateConfig",
    "GateError",
    "GateReport",
    "class_counts",
    "evaluate",
    "should_roll_back",
]

BENIGN = "benign"
TOLERANCE = 1e-9
"""Kappas are compared with this slack, so a bound exactly at the requirement passes whatever
the rounding (0.1 + 0.2 is not 0.3 in floating point)."""


class GateError(BorderlineError):
    """The gate was asked something malformed: a bad configuration, label lists of different
    lengths, an agreement figure outside its range."""


def _kappa_range(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise GateError(f"{name} must lie in [-1, 1], got {value!r}")


@dataclass(frozen=True)
class GateConfig:
    """`min_kappa`: the floor the candidate's kappa lower bound must reach; `margin`: how much the
    lower bound of (candidate - incumbent) must reach (negative makes it a non-inferiority test);
    `min_eval_items`: the fewest audit labels that count as evidence; `min_per_class`: the fewest
    of each side (benign, violating of any category) among them; `confidence`: two-sided
    coverage of the bootstrap intervals; `resamples`: bootstrap resamples.

    >>> GateConfig(min_kappa=0.8).margin
    0.02
    """

    min_kappa: float = 0.7
    margin: float = 0.02
    min_eval_items: int = 50
    min_per_class: int = 5
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES

    def __post_init__(self) -> None:
        _kappa_range("min_kappa", self.min_kappa)
        if not math.isfinite(self.margin) or abs(self.margin) > 2.0:
            raise GateError(f"margin must be finite and within [-2, 2], got {self.margin!r}")
        if isinstance(self.min_eval_items, bool) or self.min_eval_items < 1:
            raise GateError(f"min_eval_items must be at least 1, got {self.min_eval_items!r}")
        if self.min_per_class < 1:
            raise GateError(f"min_per_class must be at least 1, got {self.min_per_class!r}")
        if not (math.isfinite(self.confidence) and 0.5 <= self.confidence < 1.0):
            raise GateError(f"confidence must lie in [0.5, 1), got {self.confidence!r}")
        if self.resamples < 10:
            raise GateError(f"resamples must be at least 10, got {self.resamples!r}")


@dataclass(frozen=True)
class GateReport:
    """The gate's verdict on one candidate, kept with it whether it passed or not.

    `candidate_kappa`, `incumbent_kappa`: weighted point estimates on the audit items;
    `candidate_low`/`candidate_high` and `difference` (candidate - incumbent) with
    `difference_low`/`difference_high`: the intervals at `confidence`; `required_kappa` is
    max(min_kappa, incumbent_kappa + margin) (min_kappa alone with no incumbent), shown for the
    dashboard; `class_counts`: the evaluation items per expert label; `expert_ceiling` is the
    experts' own pairwise kappa (Light's kappa), what a model can hope to reach;
    `shadow_agreement` is the share of recent live items on which candidate and incumbent decide
    the same. Both are recorded, not gated on.
    """

    passed: bool
    reason: str
    candidate_kappa: float | None
    incumbent_kappa: float | None
    required_kappa: float | None
    eval_items: int
    expert_ceiling: float | None
    shadow_agreement: float | None
    candidate_low: float | None = None
    candidate_high: float | None = None
    difference: float | None = None
    difference_low: float | None = None
    difference_high: float | None = None
    confidence: float | None = None
    class_counts: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, field by field.

        >>> GateReport(False, "no items", None, None, 0.7, 0, None, None).as_dict()["passed"]
        False
        """
        return asdict(self)


def class_counts(expert: Sequence[str]) -> dict[str, int]:
    """Items per expert label, sorted by label.

    >>> class_counts(["violating", "benign", "benign"])
    {'benign': 2, 'violating': 1}
    """
    counts: dict[str, int] = {}
    for label in sorted(expert):
        counts[label] = counts.get(label, 0) + 1
    return counts


def _short_side(counts: dict[str, int], least: int) -> str | None:
    benign = counts.get(BENIGN, 0)
    violating = sum(n for label, n in counts.items() if label != BENIGN)
    if benign >= least and violating >= least:
        return None
    return (
        f"{violating} violating and {benign} benign evaluation items, at least {least} of each"
        " needed"
    )


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _interval(e: Estimate) -> str:
    assert e.low is not None and e.high is not None
    return f"{e.confidence:.0%} CI {_fmt(e.low)} to {_fmt(e.high)}"


def _verdict(
    items: int, counts: dict[str, int], mine: Estimate, diff: Estimate | None, config: GateConfig
) -> tuple[bool, str]:
    short = _short_side(counts, config.min_per_class)
    if items < config.min_eval_items:
        needed = config.min_eval_items
        return False, f"not enough evidence: {items} evaluation items, at least {needed} needed"
    if short is not None:
        return False, f"not enough evidence: {short}"
    if mine.value is None or mine.low is None:
        return False, (
            f"not enough evidence: candidate kappa undefined on {items} evaluation items"
            " (one label only among expert and candidate labels)"
        )
    said = f"candidate kappa {_fmt(mine.value)} ({_interval(mine)})"
    if mine.low < config.min_kappa - TOLERANCE:
        return False, f"failed: {said}: lower bound < min_kappa {_fmt(config.min_kappa)}"
    if diff is None or diff.value is None or diff.low is None:
        return (
            True,
            f"passed: {said}: lower bound >= min_kappa {_fmt(config.min_kappa)}, no incumbent",
        )
    versus = f"candidate - incumbent {_fmt(diff.value)} ({_interval(diff)})"
    if diff.low < config.margin - TOLERANCE:
        return False, f"failed: {said}; {versus}: lower bound < margin {_fmt(config.margin)}"
    return True, (
        f"passed: {said} >= min_kappa {_fmt(config.min_kappa)}; {versus} >= margin "
        f"{_fmt(config.margin)} (lower bounds)"
    )


def evaluate(
    expert: Sequence[str],
    candidate: Sequence[str],
    incumbent: Sequence[str] | None,
    *,
    config: GateConfig,
    weights: Sequence[float] | None = None,
    seed: int = 0,
    expert_ceiling: float | None = None,
    shadow_agreement: float | None = None,
) -> GateReport:
    """Judge a candidate by its Cohen's kappa against expert consensus on the audit items.

    `expert`, `candidate` and `incumbent` are labels of the same evaluation items, in the same
    order (the incumbent's may be None: no adapter is live yet); `weights` are the items'
    1 / draw probability (None: equal). See the module for the rule; `reason` says which part
    failed; too few items, a class too thin and an undefined kappa read "not enough evidence".

    >>> expert = ["violating", "benign"] * 30
    >>> report = evaluate(expert, expert, ["benign"] * 60, config=GateConfig())
    >>> report.passed, report.candidate_kappa, report.incumbent_kappa, report.difference_low
    (True, 1.0, 0.0, 1.0)
    >>> evaluate(expert[:10], expert[:10], None, config=GateConfig()).reason
    'not enough evidence: 10 evaluation items, at least 50 needed'
    >>> lopsided = ["benign"] * 49 + ["violating"]
    >>> evaluate(lopsided, lopsided, None, config=GateConfig()).reason
    'not enough evidence: 1 violating and 49 benign evaluation items, at least 5 of each needed'
    """
    items = len(expert)
    if len(candidate) != items:
        raise GateError(f"{items} expert labels but {len(candidate)} candidate labels")
    if incumbent is not None and len(incumbent) != items:
        raise GateError(f"{items} expert labels but {len(incumbent)} incumbent labels")
    if weights is not None and len(weights) != items:
        raise GateError(f"{items} expert labels but {len(weights)} weights")
    _kappa_range("expert_ceiling", expert_ceiling)
    if shadow_agreement is not None and not 0.0 <= shadow_agreement <= 1.0:
        raise GateError(f"shadow_agreement must lie in [0, 1], got {shadow_agreement!r}")

    conf, resamples = config.confidence, config.resamples
    mine = estimate_kappa(
        expert, candidate, weights, min_items=1, confidence=conf, resamples=resamples, seed=seed
    )
    theirs = diff = None
    if incumbent is not None:
        theirs = estimate_kappa(
            expert, incumbent, weights, min_items=1, confidence=conf, resamples=resamples, seed=seed
        )
        diff = paired_difference(
            expert,
            candidate,
            incumbent,
            weights,
            min_items=1,
            confidence=conf,
            resamples=resamples,
            seed=seed,
        )
    incumbent_kappa = None if theirs is None else theirs.value
    required = config.min_kappa
    if incumbent_kappa is not None:
        required = max(config.min_kappa, incumbent_kappa + config.margin)
    counts = class_counts(expert)
    passed, reason = _verdict(items, counts, mine, diff, config)
    return GateReport(
        passed=passed,
        reason=reason,
        candidate_kappa=mine.value,
        incumbent_kappa=incumbent_kappa,
        required_kappa=required,
        eval_items=items,
        expert_ceiling=expert_ceiling,
        shadow_agreement=shadow_agreement,
        candidate_low=mine.low,
        candidate_high=mine.high,
        difference=None if diff is None else diff.value,
        difference_low=None if diff is None else diff.low,
        difference_high=None if diff is None else diff.high,
        confidence=config.confidence,
        class_counts=counts,
    )


def should_roll_back(previous_better: Estimate, *, margin: float) -> bool:
    """Whether the live adapter goes back: the paired estimate of (previous - live) on the same
    audit items labelled since the promotion has a lower bound at least ``margin`` (the gate's
    rule, turned around). Too few items or an undefined kappa is not enough evidence to act on,
    so the adapter stays.

    >>> better = Estimate(0.4, 0.25, 0.55, 60, 30, 0.9)
    >>> should_roll_back(better, margin=0.02)
    True
    >>> should_roll_back(Estimate(0.03, -0.05, 0.1, 60, 30, 0.9), margin=0.02)
    False
    >>> should_roll_back(Estimate(None, None, None, 12, 30, 0.9), margin=0.02)
    False
    """
    return previous_better.low is not None and previous_better.low >= margin - TOLERANCE
