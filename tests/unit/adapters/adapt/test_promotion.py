"""Unit tests for adapters.adapt.promotion: every branch of the decision — a bad automatic
promotion rolled back (or, with nothing to roll back to, a wait that names it, never an error),
an operator's promotion left alone, no candidate, a refused candidate, a passing one held by the
cool-down after a promotion or a rollback and promoted once it is over — and the rules' checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

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
BAD = LiveEvidence(kappa=0.41, items=80)
GOOD = LiveEvidence(kappa=0.85, items=80)
PASSED = GateReport(True, "passed: ...", 0.82, 0.75, 0.77, 60, 0.8, 0.9)
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


def test_a_bad_automatic_promotion_is_rolled_back() -> None:
    decision = _decide(None, MINE, BAD)
    assert decision == Decision("roll_back", "live kappa 0.410 < 0.7 on 80 labels")


def test_a_bad_live_adapter_goes_back_even_with_a_candidate_and_inside_the_cool_down() -> None:
    assert _decide(PASSED, MINE, BAD, now=T0 + 1).action == "roll_back"


def test_nothing_to_roll_back_to_is_a_wait_with_a_reason_not_an_error() -> None:
    decision = _decide(None, MINE, BAD, can_roll_back=False)
    assert decision.action == "wait"
    assert decision.reason == (
        "live kappa 0.410 < 0.7 on 80 labels, but nothing to roll back to: v1-cand stays until"
        " a candidate passes the gate"
    )


def test_nothing_to_roll_back_to_still_lets_a_passing_candidate_replace_it() -> None:
    assert _decide(PASSED, MINE, BAD, can_roll_back=False).action == "promote"
    assert _decide(FAILED, MINE, BAD, can_roll_back=False).action == "refuse"


@pytest.mark.parametrize("active", [DEPLOYED, ROLLED_BACK], ids=["operator", "after-rollback"])
def test_only_the_trainers_own_promotions_are_rolled_back(active: Record) -> None:
    assert _decide(None, active, BAD) == Decision("wait", NO_CANDIDATE)


@pytest.mark.parametrize(
    "live",
    [
        GOOD,
        LiveEvidence(kappa=0.41, items=49),  # too few fresh labels to act on
        LiveEvidence(kappa=None, items=80),  # undefined kappa: not enough evidence
        LiveEvidence(kappa=0.7, items=80),  # exactly the floor stays
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
    assert _decide(PASSED, DEPLOYED) == Decision("promote", "gate passed: kappa 0.820 >= 0.770")
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


def test_a_live_kappa_out_of_range_is_an_error_not_a_decision() -> None:
    with pytest.raises(GateError, match="live_kappa"):
        _decide(None, MINE, LiveEvidence(kappa=1.5, items=80))
