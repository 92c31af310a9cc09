"""Unit tests for adapters.adapt.promotion: every branch of the decision — a bad automatic
promotion rolled back (or, with nothing to roll back to, a wait that names it, never an error),
an operator's promotion left alone, no candidate, a refused candidate, a passing one held by the
cool-down after a promotion or a rollback and promoted once it is over — and the rules' checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from adapters.adapt.estimate import Estimate
from adapters.adapt.gate import GateConfig, GateError, GateReport
from adapters.adapt.promotion import (
    NO_CANDIDATE,
    Decision,
    LiveEvidence,
    PromotionRules,
    cooldown_left,
    decide,
    watched,
)

BOT = "borderline trainer"
RULES = PromotionRules(GateConfig(min_kappa=0.7, min_eval_items=50), cooldown_s=60.0, actor=BOT)
T0 = 10_000.0
LATER = T0 + 3600.0  # long after any cool-down


@dataclass(frozen=True)
class Record:
    adapter_id: str
    action: str
    actor: str
    at: float


MINE = Record("v1-cand", "promote", BOT, T0)
DEPLOYED = Record("v1-boot", "promote", "deploy", T0)
ROLLED_BACK = Record("v1-boot", "rollback", BOT, T0)
LOW = Estimate(0.41, 0.3, 0.52, 80, 50, 0.9)  # the live adapter, clearly below 0.7
BAD = LiveEvidence(LOW, previous_better=Estimate(0.4, 0.25, 0.55, 80, 50, 0.9))
GOOD = LiveEvidence(
    Estimate(0.85, 0.78, 0.9, 80, 50, 0.9), previous_better=Estimate(0.0, -0.05, 0.05, 80, 50, 0.9)
)
PASSED = GateReport(True, "passed: ...", 0.82, 0.75, 0.77, 60, 0.8, 0.9, candidate_low=0.74)
FAILED = GateReport(
    False, "failed: candidate kappa 0.600 < required 0.770", 0.6, 0.75, 0.77, 60, 0.8, 0.9
)


def _decide(
    report: GateReport | None,
    active: Record | None,
    live: LiveEvidence | None = None,
    *,
    can_roll_back: bool = True,
    now: float = LATER,
) -> Decision:
    return decide(
        report, active=active, live=live, can_roll_back=can_roll_back, now=now, rules=RULES
    )


# --- the live adapter -----------------------------------------------------------------------------


def test_a_live_adapter_the_previous_one_beats_is_rolled_back() -> None:
    decision = _decide(None, MINE, BAD)
    assert decision == Decision(
        "roll_back",
        "the previous adapter is better on 80 audit labels since the promotion: previous - live"
        " 0.400 (90% CI 0.250 to 0.550), lower bound >= margin 0.020",
    )


def test_a_bad_live_adapter_goes_back_even_with_a_candidate_and_inside_the_cool_down() -> None:
    assert _decide(PASSED, MINE, BAD, now=T0 + 1).action == "roll_back"


def test_nothing_to_roll_back_to_is_an_alerting_wait_not_an_error() -> None:
    decision = _decide(None, MINE, LiveEvidence(LOW), can_roll_back=False)
    assert decision.action == "wait" and decision.alert
    assert decision.reason == (
        "live kappa 0.410 (90% CI 0.300 to 0.520, 80 audit labels): upper bound < min_kappa"
        " 0.700, but nothing to roll back to: v1-cand stays until a candidate passes the gate"
    )


def test_nothing_to_roll_back_to_and_a_live_adapter_not_shown_below_the_floor_is_quiet() -> None:
    unsure = LiveEvidence(Estimate(0.6, 0.45, 0.75, 80, 50, 0.9))
    assert _decide(None, MINE, unsure, can_roll_back=False) == Decision("wait", NO_CANDIDATE)
    few = LiveEvidence(Estimate(None, None, None, 12, 50, 0.9))
    assert _decide(None, MINE, few, can_roll_back=False) == Decision("wait", NO_CANDIDATE)


def test_nothing_to_roll_back_to_still_lets_a_passing_candidate_replace_it() -> None:
    alone = LiveEvidence(LOW)
    assert _decide(PASSED, MINE, alone, can_roll_back=False).action == "promote"
    refused = _decide(FAILED, MINE, alone, can_roll_back=False)
    assert (refused.action, refused.alert) == ("refuse", True)
    held = _decide(PASSED, MINE, alone, can_roll_back=False, now=T0 + 1)
    assert (held.action, held.alert) == ("wait", True)


@pytest.mark.parametrize("active", [DEPLOYED, ROLLED_BACK], ids=["operator", "after-rollback"])
def test_only_the_trainers_own_promotions_are_rolled_back(active: Record) -> None:
    assert _decide(None, active, BAD) == Decision("wait", NO_CANDIDATE)


@pytest.mark.parametrize(
    "live",
    [
        GOOD,
        # the previous one looks better, but not by the margin at the lower bound
        LiveEvidence(LOW, previous_better=Estimate(0.1, 0.0199, 0.2, 80, 50, 0.9)),
        LiveEvidence(LOW, previous_better=Estimate(None, None, None, 49, 50, 0.9)),  # too few
        LiveEvidence(LOW),  # no previous adapter scored: nothing to compare with
        None,  # no fresh labels at all
    ],
)
def test_a_live_adapter_without_evidence_against_it_stays(live: LiveEvidence | None) -> None:
    assert _decide(None, MINE, live) == Decision("wait", NO_CANDIDATE)


# --- the candidate --------------------------------------------------------------------------------


def test_no_candidate_and_nothing_live_waits() -> None:
    assert _decide(None, None) == Decision("wait", NO_CANDIDATE)


def test_a_candidate_the_gate_failed_is_refused_with_the_gates_reason() -> None:
    assert _decide(FAILED, DEPLOYED) == Decision("refuse", FAILED.reason)
    assert _decide(FAILED, DEPLOYED, now=T0 + 1).action == "refuse"  # cool-down or not


def test_a_passing_candidate_is_promoted() -> None:
    assert _decide(PASSED, DEPLOYED) == Decision(
        "promote", "gate passed: kappa 0.820, lower bound 0.740"
    )
    assert _decide(PASSED, None, now=T0).action == "promote"  # nothing active: no cool-down


def test_a_pass_without_figures_is_promoted_with_the_gates_reason() -> None:
    bare = GateReport(True, "passed (hand-made)", None, None, None, 60, None, None)
    assert _decide(bare, None) == Decision("promote", "passed (hand-made)")


@pytest.mark.parametrize("active", [MINE, DEPLOYED, ROLLED_BACK], ids=lambda r: r.action)
def test_the_cool_down_holds_a_promotion_after_any_change(active: Record) -> None:
    held = _decide(PASSED, active, GOOD, now=T0 + 20)
    assert held.action == "wait"
    assert held.reason == (
        f"gate passed, but {active.adapter_id} became active 20 s ago ({active.action} by "
        f"{active.actor}): promotions wait 40 s more (cool-down 60 s)"
    )
    assert _decide(PASSED, active, GOOD, now=T0 + 59.9).action == "wait"
    assert _decide(PASSED, active, GOOD, now=T0 + 60).action == "promote"  # over at 60 s


def test_no_cool_down_when_it_is_zero() -> None:
    rules = PromotionRules(RULES.gate, cooldown_s=0.0, actor=BOT)
    decision = decide(PASSED, active=MINE, live=None, can_roll_back=True, now=T0, rules=rules)
    assert decision.action == "promote"


# --- the helpers and the rules ------------------------------------------------------------------


def test_watched_and_cooldown_left() -> None:
    assert watched(MINE, BOT)
    assert not watched(DEPLOYED, BOT)
    assert not watched(ROLLED_BACK, BOT)
    assert not watched(None, BOT)
    assert cooldown_left(None, now=T0, cooldown_s=60) == 0.0
    assert cooldown_left(MINE, now=T0 + 45, cooldown_s=60) == 15.0
    assert cooldown_left(MINE, now=T0 + 600, cooldown_s=60) == 0.0


@pytest.mark.parametrize("cooldown_s", [-1.0, float("nan"), float("inf")])
def test_a_bad_cool_down_is_refused_naming_it(cooldown_s: float) -> None:
    with pytest.raises(GateError, match="cooldown_s"):
        PromotionRules(GateConfig(), cooldown_s=cooldown_s, actor=BOT)
