"""The lead's view, gathered: queue depth by reason and the oldest request's age, requests closed
as expired, labels per reviewer (and per hour, as sent through the console), each reviewer's
agreement with the trusted others' majority (the excluded reviewers' votes left out; with its
95% interval) and status, the experts' ceiling, the adapter changes (promotions and
rollbacks), the gate's verdicts on candidates (promoted, refused, held), the active policy and
adapter, the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from adapters.adapt.verdicts import GateRecord
from adapters.labels.agreement import agreement_report, expert_ceiling
from adapters.labels.store import LabelStore
from adapters.registry.store import AdapterRegistry
from streams.console.audit import AuditEntry, AuditLog
from streams.console.outbox import LabelOutbox
from streams.console.queue import TaskQueue

__all__ = ["HOURS_SHOWN", "LeadStats", "ReviewerRow", "disagreements", "lead_stats", "verdict_row"]

Z95 = 1.959964
HOURS_SHOWN = 8


class Verdicts(Protocol):
    """`adapters.adapt.verdicts.VerdictStore`: the trainer's gate reports, oldest first."""

    async def reports(self, start: int = 0) -> list[GateRecord]: ...


@dataclass(frozen=True)
class ReviewerRow:
    reviewer: str
    labels: int
    compared: int
    agreement: float | None
    kappa: float | None
    interval: tuple[float, float] | None
    status: str  # trusted, excluded, cleared, too few labels


@dataclass(frozen=True)
class LeadStats:
    policy: str
    depth: dict[str, int]
    oldest_age_s: float | None
    expired: int
    reviewers: list[ReviewerRow]
    ceiling: float | None
    adapter: str | None
    gate_history: list[dict[str, Any]]
    gate_verdicts: list[dict[str, Any]]
    audit: list[AuditEntry]
    disagreements: list[tuple[str, dict[str, str]]]
    hours: list[int]  # the hours (since the epoch) of ``per_hour``, oldest first
    per_hour: dict[str, list[int]]  # reviewer -> labels sent in each of ``hours``

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "queue_depth": self.depth,
            "oldest_age_s": self.oldest_age_s,
            "expired": self.expired,
            "reviewers": [r.__dict__ for r in self.reviewers],
            "expert_ceiling": self.ceiling,
            "active_adapter": self.adapter,
            "gate_history": self.gate_history,
            "gate_verdicts": self.gate_verdicts,
            "disagreements": [{"item": i, "votes": v} for i, v in self.disagreements],
            "labels_per_hour": {
                "hours_start_s": [h * 3600 for h in self.hours],
                "reviewers": self.per_hour,
            },
        }


def disagreements(
    votes: dict[str, dict[str, str]], limit: int = 20
) -> list[tuple[str, dict[str, str]]]:
    """Items whose reviewers gave different labels, most split first (keys ``policy/item``).

    >>> disagreements({"v1/a": {"x": "benign", "y": "violating"}, "v1/b": {"x": "benign"}})
    [('v1/a', {'x': 'benign', 'y': 'violating'})]
    """
    split = [(k, v) for k, v in votes.items() if len(set(v.values())) > 1]
    split.sort(key=lambda kv: (-len(set(kv[1].values())), -len(kv[1]), kv[0]))
    return split[:limit]


def verdict_row(report: GateRecord) -> dict[str, Any]:
    """What the lead view shows of a gate report: the candidate, what was done with it
    (``promote``, ``refuse`` or ``wait``; older reports: whether it passed), its kappa against the
    required one, and why.

    >>> r = GateRecord(adapter_id="a1", policy_version="v1", passed=False, reason="kappa low",
    ...                candidate_kappa=0.41, required_kappa=0.6, decision="refuse")
    >>> verdict_row(r)["decision"], verdict_row(r)["candidate_kappa"]
    ('refuse', 0.41)
    """
    decision = report.decision or ("promote" if report.passed else "refuse")
    return {
        "adapter_id": report.adapter_id,
        "decision": decision,
        "candidate_kappa": report.candidate_kappa,
        "required_kappa": report.required_kappa,
        "eval_items": report.eval_items,
        "reason": report.decision_reason or report.reason,
    }


def _status(reviewer: str, kappa: float | None, excluded: set[str], cleared: set[str]) -> str:
    if reviewer in excluded:
        return "excluded"
    if reviewer in cleared:
        return "cleared"
    return "too few labels" if kappa is None else "trusted"


async def lead_stats(
    policy: str,
    *,
    now: float,
    queue: TaskQueue,
    labels: LabelStore,
    registry: AdapterRegistry,
    verdicts: Verdicts,
    outbox: LabelOutbox,
    audit: AuditLog,
    min_shared: int,
    limit: int = 20,
) -> LeadStats:
    votes = await labels.votes_every_policy()
    excluded, cleared = await labels.excluded(), await labels.cleared()
    # each reviewer against the consensus of the trusted others: an excluded reviewer's votes
    # are in no one's consensus (as in the collector's trust and `review stats`)
    report = agreement_report(votes, min_shared=min_shared, exclude=excluded)
    rows = []
    for r in report.reviewers:
        interval = None
        if r.kappa is not None and r.std_error is not None:
            interval = (
                max(-1.0, r.kappa - Z95 * r.std_error),
                min(1.0, r.kappa + Z95 * r.std_error),
            )
        rows.append(
            ReviewerRow(
                r.reviewer,
                r.labels,
                r.compared,
                r.agreement,
                r.kappa,
                interval,
                _status(r.reviewer, r.kappa, excluded, cleared),
            )
        )
    listed = {row.reviewer for row in rows}
    for reviewer in sorted(await labels.registered() - listed):  # no label counted yet
        rows.append(
            ReviewerRow(
                reviewer, 0, 0, None, None, None, _status(reviewer, None, excluded, cleared)
            )
        )
    oldest = await queue.oldest(policy)
    active = await registry.active(policy)
    history = await registry.history(policy, limit=limit)
    reports = [r for r in await verdicts.reports() if r.policy_version == policy][-limit:]
    hours, per_hour = await outbox.per_hour(now=now, hours=HOURS_SHOWN)
    return LeadStats(
        policy=policy,
        depth=await queue.depth(policy),
        oldest_age_s=None if oldest is None else max(0.0, now - oldest),
        expired=await queue.expired_total(policy),
        reviewers=rows,
        ceiling=expert_ceiling(votes, excluded, min_shared=min_shared),
        adapter=None if active is None else active.adapter_id,
        gate_history=[h.model_dump() for h in history],
        gate_verdicts=[verdict_row(r) for r in reversed(reports)],  # newest first
        audit=await audit.latest(50),
        disagreements=disagreements(votes),
        hours=hours,
        per_hour=per_hour,
    )
