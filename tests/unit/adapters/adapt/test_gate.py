"""Unit tests for adapters.gate: the kappa gate and the rollback rule, degenerate cases on
purpose (kappa undefined, too few items, no incumbent, exactly at the threshold, incumbent
better)."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from adapters.adapt.gate import GateConfig, GateError, GateReport, evaluate, should_roll_back
from models.errors import BorderlineError

V, B = "violating", "benign"


def _expert(n: int = 80) -> list[str]:
    """n items, half violating, half benign."""
    return [V] * (n // 2) + [B] * (n - n // 2)


def _with_errors(expert: list[str], errors: int) -> list[str]:
    """Flip `errors` violating and `errors` benign labels: the marginals stay 50/50, so on n
    balanced items kappa is exactly 1 - 4 * errors / n."""
    labels = list(expert)
    half = len(expert) // 2
    for index in [*range(errors), *range(half, half + errors)]:
        labels[index] = B if labels[index] == V else V
    return labels


def test_with_errors_gives_the_kappa_it_promises() -> None:
    expert = _expert(80)
    for errors, expected in [(0, 1.0), (6, 0.7), (8, 0.6), (10, 0.5)]:
        value = cohen_kappa_score(expert, _with_errors(expert, errors))
        assert value == pytest.approx(expected)


# --- GateConfig --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_kappa": 1.5}, "min_kappa"),
        ({"min_kappa": float("nan")}, "min_kappa"),
        ({"margin": float("inf")}, "margin"),
        ({"min_eval_items": 0}, "min_eval_items"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(GateError, match=name):
        GateConfig(**kwargs)  # type: ignore[arg-type]


def test_gate_error_is_a_borderline_error() -> None:
    assert issubclass(GateError, BorderlineError)


def test_config_defaults() -> None:
    assert GateConfig() == GateConfig(min_kappa=0.7, margin=0.02, min_eval_items=50)


# --- evaluate ----------------------------------------------------------------------------------


def test_no_incumbent_requires_min_kappa() -> None:
    expert = _expert()
    report = evaluate(expert, _with_errors(expert, 4), None, config=GateConfig())
    assert report.passed
    assert report.candidate_kappa == pytest.approx(0.8)
    assert report.incumbent_kappa is None
    assert report.required_kappa == 0.7
    assert report.eval_items == 80
    assert report.reason.startswith("passed:") and "no incumbent" in report.reason


def test_no_incumbent_and_below_min_kappa_fails() -> None:
    expert = _expert()
    report = evaluate(expert, _with_errors(expert, 10), None, config=GateConfig())
    assert not report.passed
    assert report.candidate_kappa == pytest.approx(0.5)
    assert (
        report.reason
        == "failed: candidate kappa 0.500 < required 0.700 (min_kappa 0.700, no incumbent)"
    )


def test_exactly_min_kappa_passes() -> None:
    expert = _expert()
    candidate = _with_errors(expert, 6)  # kappa 0.7 exactly, up to rounding
    assert evaluate(expert, candidate, None, config=GateConfig(min_kappa=0.7)).passed
    assert not evaluate(expert, _with_errors(expert, 7), None, config=GateConfig()).passed


def test_exactly_incumbent_plus_margin_passes() -> None:
    expert = _expert()
    incumbent = _with_errors(expert, 8)  # 0.6
    config = GateConfig(min_kappa=0.5, margin=0.1)  # required 0.6 + 0.1
    at = evaluate(expert, _with_errors(expert, 6), incumbent, config=config)  # 0.7
    assert at.passed
    assert at.required_kappa == pytest.approx(0.7)
    assert at.incumbent_kappa == pytest.approx(0.6)
    assert "incumbent 0.600 + margin 0.100" in at.reason
    below = evaluate(expert, _with_errors(expert, 7), incumbent, config=config)  # 0.65
    assert not below.passed


def test_at_the_requirement_passes_despite_float_rounding() -> None:
    expert = _expert()
    incumbent = _with_errors(expert, 7)  # 0.65, and 0.65 + 0.05 is 0.7000000000000001
    candidate = _with_errors(expert, 6)  # 0.7
    report = evaluate(expert, candidate, incumbent, config=GateConfig(min_kappa=0.5, margin=0.05))
    assert report.required_kappa is not None and report.candidate_kappa is not None
    assert report.candidate_kappa < report.required_kappa  # by one float rounding step only
    assert report.passed


def test_incumbent_better_keeps_the_incumbent() -> None:
    expert = _expert()
    report = evaluate(
        expert, _with_errors(expert, 4), _with_errors(expert, 2), config=GateConfig()
    )  # candidate 0.8, incumbent 0.9
    assert not report.passed
    assert report.required_kappa == pytest.approx(0.92)
    assert report.reason.startswith("failed: candidate kappa 0.800 < required 0.920")


def test_better_than_incumbent_by_less_than_the_margin_fails() -> None:
    expert = _expert(200)
    incumbent = _with_errors(expert, 10)  # 0.8
    candidate = _with_errors(expert, 9)  # 0.82: short of 0.8 + 0.05
    report = evaluate(expert, candidate, incumbent, config=GateConfig(margin=0.05))
    assert report.candidate_kappa is not None and report.incumbent_kappa is not None
    assert report.candidate_kappa > report.incumbent_kappa
    assert not report.passed


def test_weak_incumbent_leaves_min_kappa_as_the_bar() -> None:
    expert = _expert()
    report = evaluate(
        expert, _with_errors(expert, 6), _with_errors(expert, 16), config=GateConfig()
    )  # incumbent 0.2
    assert report.passed
    assert report.required_kappa == 0.7
    assert "min_kappa 0.700, above incumbent 0.200 + margin 0.020" in report.reason


def test_too_few_items_is_not_enough_evidence_even_when_perfect() -> None:
    expert = _expert(49)
    report = evaluate(expert, expert, None, config=GateConfig(min_eval_items=50))
    assert not report.passed
    assert report.candidate_kappa == 1.0  # still measured and reported
    assert report.reason == "not enough evidence: 49 evaluation items, at least 50 needed"
    assert evaluate(_expert(50), _expert(50), None, config=GateConfig()).passed


def test_empty_evaluation_set_is_not_enough_evidence() -> None:
    report = evaluate([], [], [], config=GateConfig())
    assert not report.passed
    assert report.eval_items == 0
    assert report.candidate_kappa is None and report.incumbent_kappa is None
    assert report.reason.startswith("not enough evidence")


def test_undefined_candidate_kappa_is_not_enough_evidence() -> None:
    expert = [B] * 60  # one label only, in both sources: kappa undefined, not 1.0
    report = evaluate(expert, expert, None, config=GateConfig())
    assert not report.passed
    assert report.candidate_kappa is None
    assert report.reason.startswith("not enough evidence: candidate kappa undefined on 60")


def test_one_expert_label_with_a_dissenting_candidate_is_a_real_failure() -> None:
    expert = [B] * 60
    candidate = [V] + [B] * 59  # two labels occur: kappa is defined (0.0)
    report = evaluate(expert, candidate, None, config=GateConfig())
    assert report.candidate_kappa == 0.0
    assert not report.passed and report.reason.startswith("failed:")


def test_undefined_incumbent_kappa_leaves_min_kappa_as_the_bar() -> None:
    expert = [B] * 60
    incumbent = [B] * 60  # undefined against these experts
    report = evaluate(expert, [V] + [B] * 59, incumbent, config=GateConfig())
    assert report.incumbent_kappa is None
    assert report.required_kappa == 0.7
    assert "incumbent kappa undefined" in report.reason


def test_a_perfect_incumbent_cannot_be_beaten_by_a_positive_margin() -> None:
    expert = _expert()
    report = evaluate(expert, expert, expert, config=GateConfig())
    assert report.required_kappa == pytest.approx(1.02)
    assert not report.passed


def test_kappa_is_scikit_learns_on_several_categories() -> None:
    rng = np.random.default_rng(0)
    categories = np.array(["benign", "scam", "adult"])
    expert = categories[rng.integers(0, 3, size=300)]
    candidate = np.where(rng.random(300) < 0.85, expert, categories[rng.integers(0, 3, size=300)])
    report = evaluate(expert.tolist(), candidate.tolist(), None, config=GateConfig())
    assert report.candidate_kappa == pytest.approx(cohen_kappa_score(expert, candidate))
    assert report.passed == (cohen_kappa_score(expert, candidate) >= 0.7)


def test_ceiling_and_shadow_agreement_are_recorded_not_gated() -> None:
    expert = _expert()
    report = evaluate(
        expert,
        _with_errors(expert, 4),
        None,
        config=GateConfig(),
        expert_ceiling=0.75,  # the candidate beats the experts' own agreement: still a pass
        shadow_agreement=0.2,
    )
    assert report.passed
    assert report.expert_ceiling == 0.75 and report.shadow_agreement == 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"candidate": [V] * 3}, "80 expert labels but 3 candidate labels"),
        ({"incumbent": [V] * 3}, "80 expert labels but 3 incumbent labels"),
        ({"expert_ceiling": 1.2}, "expert_ceiling"),
        ({"shadow_agreement": -0.1}, "shadow_agreement"),
    ],
)
def test_evaluate_rejects_malformed_input(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"candidate": _expert(), "incumbent": None, **kwargs}
    with pytest.raises(GateError, match=match):
        evaluate(_expert(), config=GateConfig(), **arguments)  # type: ignore[arg-type]


def test_report_as_dict_is_json_ready() -> None:
    expert = _expert()
    report = evaluate(expert, expert, _with_errors(expert, 4), config=GateConfig())
    data = report.as_dict()
    assert list(data) == [field.name for field in fields(GateReport)]
    assert json.loads(json.dumps(data)) == data
    assert GateReport(**data) == report


# --- should_roll_back --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("live_kappa", "items", "expected"),
    [
        (0.55, 80, True),  # defined, enough items, below
        (0.55, 50, True),  # exactly min_items is enough
        (0.55, 49, False),  # too few items: not enough evidence
        (0.7, 80, False),  # exactly min_kappa stays
        (0.9, 80, False),
        (None, 80, False),  # undefined: not enough evidence
        (-0.2, 500, True),
    ],
)
def test_should_roll_back(live_kappa: float | None, items: int, expected: bool) -> None:
    assert should_roll_back(live_kappa, min_kappa=0.7, min_items=50, items=items) is expected


def test_should_roll_back_at_a_rounded_threshold_stays() -> None:
    assert not should_roll_back(0.1 + 0.2, min_kappa=0.3, min_items=1, items=1)
    assert should_roll_back(0.3 - 1e-6, min_kappa=0.3, min_items=1, items=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"live_kappa": 1.5, "min_kappa": 0.7, "min_items": 50, "items": 80},
        {"live_kappa": 0.5, "min_kappa": 0.7, "min_items": 0, "items": 80},
        {"live_kappa": 0.5, "min_kappa": 0.7, "min_items": 50, "items": -1},
    ],
)
def test_should_roll_back_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(GateError):
        should_roll_back(**kwargs)  # type: ignore[arg-type]
