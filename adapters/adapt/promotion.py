"""The promotion decision: from the gate's report on a new candidate (or none), the active
adapter's registry record, the live adapter's kappa on fresh expert labels and the clock, one
action — ``promote``, ``refuse``, ``roll_back`` or ``wait`` — with the reason.

The rules, in order:

1. A live adapter that the trainer itself promoted goes back when `gate.should_roll_back` says
   so: the previous adapter, scored on the same audit-drawn items labelled since the promotion,
   is better by the gate's paired rule (an operator's promotion is theirs to undo). No cool-down
   holds a rollback: its evidence (enough audit labels since the promotion, a paired lower
   bound above the margin) is its own guard, and the rollback itself starts a cool-down for
   promotions (rule 4), so promote -> roll back -> promote cannot flap. When there is nothing to
   roll back to and the live adapter's kappa upper bound is below ``min_kappa``, the decision
   is ``wait`` with ``alert`` set (the trainer logs it and counts it), never an error: the
   adapter stays until a candidate passes the gate.
2. With no candidate, ``wait``.
3. A candidate the gate failed is refused.
4. A candidate the gate passed waits while the active adapter changed (a promotion or a
   rollback, by anyone) less than ``cooldown_s`` ago, so the live adapter does not flap;
   otherwise it is promoted.

Pure, no I/O and no clock: ``now`` is an argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

from adapters.adapt.estimate import Estimate
from adapters.adapt.gate import TOLERANCE, GateConfig, GateError, GateReport, should_roll_back

__all__ = [
    "NO_CANDIDATE",
    "Action",
    "ActiveView",
    "Decision",
    "LiveEvidence",
    "PromotionRules",
    "cooldown_left",
    "decide",
    "watched",
]

Action = Literal["promote", "refuse", "roll_back", "wait"]
NO_CANDIDATE = "no candidate"
"""The reason of a ``wait`` when there is neither a candidate nor anything to do live."""


class ActiveView(Protocol):
    """What the decision reads of the registry's active record (`ActiveRecord` has it)."""

    @property
    def adapter_id(self) -> str: ...
    @property
    def action(self) -> str: ...  # "promote" or "rollback"
    @property
    def actor(self) -> str: ...
    @property
    def at(self) -> float: ...  # when it became active, epoch seconds


@dataclass(frozen=True)
class LiveEvidence:
    """The live adapter on the audit-drawn items labelled since it went live: its weighted
    kappa against expert consensus (``live``), and the paired estimate of (previous - live) on
    the same items (``previous_better``; None: no previous adapter was scored)."""

    live: Estimate
    previous_better: Estimate | None = None


@dataclass(frozen=True)
class PromotionRules:
    """``gate``: its ``min_kappa`` and ``min_eval_items`` also judge the live adapter;
    ``cooldown_s``: how long after a change of the active adapter no promotion happens;
    ``actor``: the trainer's name in the registry (only its promotions are rolled back).

    >>> PromotionRules(GateConfig(), cooldown_s=60.0, actor="borderline trainer").cooldown_s
    60.0
    """

    gate: GateConfig
    cooldown_s: float
    actor: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cooldown_s) and self.cooldown_s >= 0):
            raise GateError(f"cooldown_s must be finite and at least 0, got {self.cooldown_s!r}")


@dataclass(frozen=True)
class Decision:
    """``alert``: the live adapter is below the floor and nothing can replace it yet."""

    action: Action
    reason: str
    alert: bool = False


def watched(active: ActiveView | None, actor: str) -> bool:
    """Whether the live adapter is judged on fresh labels: it was promoted by ``actor``.

    >>> from types import SimpleNamespace as Record
    >>> watched(Record(adapter_id="a", action="promote", actor="bot", at=0.0), "bot")
    True
    >>> watched(Record(adapter_id="a", action="rollback", actor="bot", at=0.0), "bot")
    False
    """
    return active is not None and active.action == "promote" and active.actor == actor


def cooldown_left(active: ActiveView | None, *, now: float, cooldown_s: float) -> float:
    """Seconds until a promotion may follow the last change of the active adapter (0: now).

    >>> from types import SimpleNamespace as Record
    >>> cooldown_left(Record(adapter_id="a", action="promote", actor="x", at=100.0),
    ...               now=130.0, cooldown_s=60.0)
    30.0
    """
    if active is None:
        return 0.0
    return max(0.0, active.at + cooldown_s - now)


def _previous_better(live: LiveEvidence | None, gate: GateConfig) -> str | None:
    if live is None or live.previous_better is None:
        return None
    diff = live.previous_better
    if not should_roll_back(diff, margin=gate.margin):
        return None
    assert diff.value is not None and diff.low is not None
    return (
        f"the previous adapter is better on {diff.items} audit labels since the promotion: "
        f"previous - live {diff.value:.3f} ({diff.confidence:.0%} CI {diff.low:.3f} to "
        f"{diff.high:.3f}), lower bound >= margin {gate.margin:.3f}"
    )


def _below_floor(live: LiveEvidence | None, gate: GateConfig) -> str | None:
    if live is None or live.live.high is None or live.live.value is None:
        return None
    if live.live.high >= gate.min_kappa - TOLERANCE:
        return None
    return f"live kappa {live.live.describe()}: upper bound < min_kappa {gate.min_kappa:.3f}"


def decide(
    report: GateReport | None,
    *,
    active: ActiveView | None,
    live: LiveEvidence | None,
    can_roll_back: bool,
    now: float,
    rules: PromotionRules,
) -> Decision:
    """The action on the active adapter and the candidate (``report``, None: no candidate).
    ``can_roll_back``: the active record names a previous adapter to go back to.

    >>> from types import SimpleNamespace as Record
    >>> rules = PromotionRules(GateConfig(), cooldown_s=60.0, actor="bot")
    >>> mine = Record(adapter_id="a2", action="promote", actor="bot", at=1000.0)
    >>> live = Estimate(0.41, 0.3, 0.52, 80, 50, 0.9)
    >>> bad = LiveEvidence(live, previous_better=Estimate(0.4, 0.25, 0.55, 80, 50, 0.9))
    >>> decide(None, active=mine, live=bad, can_roll_back=True, now=1010.0, rules=rules).action
    'roll_back'
    >>> decision = decide(None, active=mine, live=LiveEvidence(live), can_roll_back=False,
    ...                   now=1010.0, rules=rules)
    >>> decision.action, decision.alert
    ('wait', True)
    >>> good = GateReport(True, "passed", 0.82, 0.75, 0.77, 60, None, None)
    >>> decide(good, active=mine, live=None, can_roll_back=True, now=1030.0, rules=rules)
    Decision(action='wait', reason='gate passed, but a2 became active 30 s ago (promote by bot): promotions wait 30 s more (cool-down 60 s)', alert=False)
    >>> decide(good, active=mine, live=None, can_roll_back=True, now=1090.0, rules=rules).action
    'promote'
    """  # noqa: E501
    mine = watched(active, rules.actor)
    better = _previous_better(live, rules.gate) if mine else None
    if better is not None and can_roll_back:
        return Decision("roll_back", better)
    floor = _below_floor(live, rules.gate) if mine and not can_roll_back else None
    if report is None:
        if floor is not None:
            assert active is not None
            return Decision(
                "wait",
                f"{floor}, but nothing to roll back to: {active.adapter_id} stays until a "
                "candidate passes the gate",
                alert=True,
            )
        return Decision("wait", NO_CANDIDATE)
    if not report.passed:
        return Decision("refuse", report.reason, alert=floor is not None)
    left = cooldown_left(active, now=now, cooldown_s=rules.cooldown_s)
    if active is not None and left > 0:
        return Decision(
            "wait",
            f"gate passed, but {active.adapter_id} became active {now - active.at:.0f} s ago "
            f"({active.action} by {active.actor}): promotions wait {left:.0f} s more "
            f"(cool-down {rules.cooldown_s:.0f} s)",
            alert=floor is not None,
        )
    if report.candidate_kappa is None or report.candidate_low is None:
        return Decision("promote", report.reason)
    return Decision(
        "promote",
        f"gate passed: kappa {report.candidate_kappa:.3f}, lower bound "
        f"{report.candidate_low:.3f}"
        + (
            ""
            if report.difference_low is None
            else f", over incumbent by at least {report.difference_low:.3f}"
        ),
    )
