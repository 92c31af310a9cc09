"""What the demo has seen so far: decisions, review requests, labels, gate verdicts and drift
samples over time, shared by the live view, the report and the summary."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from adapters.labels.agreement import kappa
from adapters.offline.simulation import DEFAULT_PANEL, parse_panel, policy_truth
from models.errors import BorderlineError
from streams.wire.settings import GateSettings

__all__ = ["DemoOptions", "DemoState", "decided_label", "pairs_kappa"]


POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "policies"


class DemoError(BorderlineError):
    """The demo cannot run as asked (no policy file, a bad option)."""


def decided_label(decision: dict[str, Any]) -> str:
    """What a decision says about the item: blocked is violating, allowed benign, and an item
    sent to review counts by its probability."""
    if decision["action"] in ("block", "allow"):
        return "violating" if decision["action"] == "block" else "benign"
    return "violating" if decision["probabilities"].get("violating", 0.0) >= 0.5 else "benign"


def pairs_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of (expected, decided) label pairs; None when there are none."""
    if not pairs:
        return None
    expected, decided = zip(*pairs, strict=True)
    return kappa(list(expected), list(decided))


ACTOR = "borderline demo"
BOOTSTRAP_TRAIN, BOOTSTRAP_HOLDOUT = 300, 300


@dataclass(frozen=True)
class DemoOptions:
    items: int = 1500
    rate: float = 8.0
    workers: int = 2
    seed: int = 0
    out: Path = Path("out/demo")
    live: bool = True
    policy_change: bool = True
    change_at: float = 0.25  # share of the stream replayed before v2 is published
    promo_share: float = 0.2  # share of promotional mail (hard-ham) in the stream
    panel: str = DEFAULT_PANEL
    per_item: int | None = None  # reviewers per request; None: as many as the request asks
    # the gate's knobs: None takes the setting (BORDERLINE_GATE__MIN_KAPPA, ...)
    min_kappa: float | None = None
    margin: float | None = None
    min_eval_items: int | None = None
    min_new_labels: int = 60  # the trainer's pace, compressed for a demo run
    trainer_interval_s: float = 5.0
    settle_s: float = 300.0  # after the stream, how long to wait for the loop to close
    v1: Path = POLICIES / "v1.yaml"
    v2: Path = POLICIES / "v2.yaml"
    console: bool = False  # also run the reviewer console, with a lead and a reviewer account

    def gate(self, knobs: GateSettings) -> GateSettings:
        """The gate's knobs for this run: the settings, with this run's overrides.

        >>> DemoOptions(min_kappa=0.5).gate(GateSettings()).min_kappa
        0.5
        >>> DemoOptions().gate(GateSettings(min_kappa=0.6)).min_kappa
        0.6
        """
        overrides = {
            "min_kappa": self.min_kappa,
            "margin": self.margin,
            "min_eval_items": self.min_eval_items,
        }
        return knobs.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    def check(self) -> None:
        if not 0.0 < self.change_at < 1.0:
            raise DemoError(f"--change-at {self.change_at}: a share of the stream in (0, 1)")
        if not 0.0 <= self.promo_share < 1.0:
            raise DemoError(f"promo_share {self.promo_share}: in [0, 1)")
        parse_panel(self.panel)  # a bad panel is one line, before anything starts
        for path in (self.v1, self.v2) if self.policy_change else (self.v1,):
            if not path.is_file():
                raise DemoError(f"policy file {path} not found (run from the repository root)")


@dataclass
class GateVerdict:
    at: float
    adapter_id: str
    policy_version: str
    passed: bool
    candidate_kappa: float | None
    incumbent_kappa: float | None
    required_kappa: float | None
    expert_labels: int | None
    eval_labels: int | None
    reason: str


@dataclass
class DemoState:
    """What the demo has seen so far; rendered live, plotted and summarised at the end."""

    items_total: int = 0
    items_in: int = 0
    started: float = field(default_factory=time.time)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    decided_at: dict[str, float] = field(default_factory=dict)  # when the demo saw it
    duplicates: int = 0
    review_requests: Counter[str] = field(default_factory=Counter)
    review_times: list[tuple[float, str]] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    workers: Counter[str] = field(default_factory=Counter)
    policy: str = "?"
    adapter: str = "?"
    first_adapter: str = "?"
    consensus: dict[str, dict[str, str]] = field(default_factory=dict)  # policy -> item -> label
    run_items: set[str] = field(default_factory=set)  # this run's item ids
    policy_events: list[tuple[float, str]] = field(default_factory=list)
    adapter_events: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[GateVerdict] = field(default_factory=list)
    trainer: str = ""  # the trainer's last step: what it did or is waiting for
    live_kappa: str = ""  # the live adapter on the audit draws, or "not enough audit labels"
    labels: dict[str, int] = field(default_factory=dict)  # policy -> expert labels
    open_requests: int = 0
    excluded: set[str] = field(default_factory=set)
    agreement: dict[str, float] = field(default_factory=dict)
    ceiling: float | None = None
    drift: dict[str, float] = field(default_factory=dict)
    drift_fired: set[str] = field(default_factory=set)
    second_opinions_why: dict[str, float] = field(default_factory=dict)  # the collector's counter
    samples: list[dict[str, Any]] = field(default_factory=list)
    metrics_scrapes: int = 0
    metrics_failures: int = 0

    def now(self) -> float:
        return time.time() - self.started

    def on_message(self, kind: str, doc: dict[str, Any]) -> None:
        t = self.now()
        if kind == "decision":
            if doc["item_id"] in self.decisions:
                self.duplicates += 1
            self.decisions[doc["item_id"]] = doc
            self.decided_at[doc["item_id"]] = t
            self.workers[doc["worker"]] += 1
        elif kind == "review":
            self.review_requests[doc["reason"]] += 1
            self.review_times.append((t, doc["reason"]))
        elif kind == "adapter":
            self.adapter_events.append({**doc, "t": t})
        else:
            self.dead_letters[doc.get("reason", "unknown")] += 1

    def actions(self) -> Counter[str]:
        return Counter(d["action"] for d in self.decisions.values())

    def rate(self) -> float:
        recent = [t for t in self.decided_at.values() if t >= self.now() - 10.0]
        return len(recent) / min(10.0, max(self.now(), 1e-9))

    def promotions(self) -> list[dict[str, Any]]:
        return [e for e in self.adapter_events if e["event"] == "promoted"]

    def labels_collected(self) -> int:
        return sum(self.labels.values())

    def recent_kappa(self, truth: dict[str, str], last: int = 200) -> float | None:
        """The live decisions' kappa against the simulated experts' truth under the policy each
        decision was made under (the last ``last`` decisions)."""
        recent = sorted(self.decisions, key=self.decided_at.__getitem__)[-last:]
        return truth_kappa([self.decisions[i] for i in recent], truth)

    def table(self, truth: dict[str, str]) -> Table:
        t = Table(title="borderline demo", show_header=False, min_width=72)
        a = self.actions()
        t.add_row("elapsed", f"{self.now():.0f} s")
        t.add_row(
            "items in / decided", f"{self.items_in}/{self.items_total} / {len(self.decisions)}"
        )
        t.add_row("decisions per second", f"{self.rate():.1f}")
        t.add_row("allow / block / review", f"{a['allow']} / {a['block']} / {a['review']}")
        t.add_row("policy / adapter", f"{self.policy} / {self.adapter}")
        t.add_row(
            "review requests",
            ", ".join(f"{k} {v}" for k, v in sorted(self.review_requests.items())) or "0",
        )
        t.add_row("review queue (open requests)", str(self.open_requests))
        t.add_row(
            "expert labels collected",
            ", ".join(f"{p}: {n}" for p, n in sorted(self.labels.items())) or "0",
        )
        t.add_row(
            "reviewer kappa vs consensus",
            ", ".join(
                f"{r} {k:.2f}{' (excluded)' if r in self.excluded else ''}"
                for r, k in sorted(self.agreement.items())
            )
            or "not enough shared items yet",
        )
        t.add_row("experts' pairwise kappa (ceiling)", _fmt(self.ceiling))
        t.add_row(
            "drift (input p, prediction p, concept rate)",
            " / ".join(_fmt(self.drift.get(s), 4) for s in ("input", "prediction", "concept"))
            + (f"  fired: {', '.join(sorted(self.drift_fired))}" if self.drift_fired else ""),
        )
        t.add_row("gate, last verdict", self.last_verdict())
        t.add_row("trainer", self.trainer or "no step yet")
        t.add_row("live kappa (audit draws)", self.live_kappa or "no audit labels yet")
        t.add_row("promotions", str(len(self.promotions())))
        t.add_row("kappa vs simulated truth (last 200)", _fmt(self.recent_kappa(truth)))
        t.add_row("dead letters", str(sum(self.dead_letters.values())))
        t.add_row("workers", ", ".join(f"{w} {n}" for w, n in sorted(self.workers.items())))
        return t

    def last_verdict(self) -> str:
        if not self.verdicts:
            return "none yet"
        v = self.verdicts[-1]
        word = "PROMOTED" if v.passed else "refused"
        return (
            f"{v.adapter_id} ({v.policy_version}) {word}: kappa {_fmt(v.candidate_kappa)} "
            f"vs required {_fmt(v.required_kappa)}, incumbent {_fmt(v.incumbent_kappa)}"
        )

    def log_line(self) -> str:
        a = self.actions()
        return (
            f"[{self.now():5.0f}s] in {self.items_in}/{self.items_total} decided "
            f"{len(self.decisions)} ({self.rate():.1f}/s) allow {a['allow']} block {a['block']} "
            f"review {a['review']} | policy {self.policy} adapter {self.adapter} | labels "
            f"{self.labels_collected()} open {self.open_requests} | gate: {self.last_verdict()}"
            f" | trainer: {self.trainer or 'no step yet'}"
        )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if digits > 3 else f"{value:.3f}"


def truth_kappa(decisions: list[dict[str, Any]], truth: dict[str, str]) -> float | None:
    """The decisions' kappa against the simulated truth under each decision's policy."""
    pairs = [
        (policy_truth(d["item_id"], d["policy_version"], truth[d["item_id"]]), decided_label(d))
        for d in decisions
        if d["item_id"] in truth
    ]
    return pairs_kappa(pairs)
