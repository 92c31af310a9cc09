"""The demo's plots: kappa over time, review volume by reason, throughput, and the drift signals.

Kappa against the experts is computed on the audit draws only (items drawn uniformly, whatever
the model thought of them), weighted by 1 / draw probability: the other reviewed items were
chosen for being uncertain, and a kappa on them says how hard they are, not how good the model
is. The figure on every reviewed item is kept only where it is labelled as biased."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.demo.state import DemoState
from adapters.adapt.estimate import CONFIDENCE, estimate_kappa
from adapters.labels.agreement import kappa
from streams.demo.state import decided_label, pairs_kappa

__all__ = ["MIN_AUDIT_ITEMS", "PLOTS", "adapter_kappas", "kappa_series"]

AuditWeights = Mapping[str, Mapping[str, float]]
"""policy -> audit-drawn item -> 1 / its draw probability."""

MIN_AUDIT_ITEMS = 30
"""The fewest audit labels a shown kappa rests on (fewer: "not enough audit labels")."""


def adapter_kappas(
    state: DemoState, audit: AuditWeights | None = None, *, min_items: int = MIN_AUDIT_ITEMS
) -> dict[str, dict[str, Any]]:
    """Per adapter and policy (``"adapter (policy)"``): the weighted kappa of its live
    decisions against the experts' consensus on the audit-drawn items (value, interval, items,
    and ``figure``, its wording: "not enough audit labels (n of m)" below ``min_items``); and,
    labelled as biased, the kappa on every item the experts labelled (``reviewed_kappa``)."""
    audit = audit or {}
    rows: dict[tuple[str, str], list[tuple[str, str, float | None]]] = defaultdict(list)
    for item_id, d in state.decisions.items():
        policy = d["policy_version"]
        label = state.consensus.get(policy, {}).get(item_id)
        if label is not None:
            weight = audit.get(policy, {}).get(item_id)
            rows[(d["adapter_version"], policy)].append((label, decided_label(d), weight))
    out = {}
    for (adapter_id, policy), found in rows.items():
        drawn = [(e, m, w) for e, m, w in found if w is not None]
        estimate = estimate_kappa(
            [e for e, _, _ in drawn],
            [m for _, m, _ in drawn],
            [w for _, _, w in drawn if w is not None],
            min_items=min_items,
        )
        out[f"{adapter_id} ({policy})"] = {
            "adapter": adapter_id,
            "policy": policy,
            **estimate.as_dict(),
            "figure": estimate.describe(),
            "reviewed_items": len(found),
            "reviewed_kappa_biased": pairs_kappa([(e, m) for e, m, _ in found]),
        }
    return out


PLOTS = ("kappa.png", "reviews.png", "throughput.png", "drift.png")


_REASON_COLOURS = {
    "uncertain": "#4c72b0",
    "boundary": "#dd8452",
    "audit": "#55a868",
    "second_opinion": "#8172b3",
    "policy_change": "#c44e52",
}


def _bins(state: DemoState) -> tuple[float, int]:
    elapsed = max(state.now(), 1.0)
    width = max(10.0, elapsed / 24)
    return width, math.ceil(elapsed / width)


def _weighted(rows: list[tuple[str, str, float]]) -> float | None:
    if not rows:
        return None
    expected, decided, weights = zip(*rows, strict=True)
    return kappa(list(expected), list(decided), sample_weight=list(weights))


def kappa_series(
    state: DemoState, truth: dict[str, str], audit: AuditWeights | None = None
) -> list[dict[str, Any]]:
    """Per time bin: the decisions' weighted kappa against the experts' consensus on the
    audit-drawn items (``expert``), and against the simulated truth on every item
    (``truth``), under the policy each was decided under."""
    from adapters.offline.simulation import policy_truth

    audit = audit or {}
    width, n = _bins(state)
    rows: list[dict[str, list[tuple[str, str, float]]]] = [defaultdict(list) for _ in range(n + 1)]
    for item_id, d in state.decisions.items():
        b = min(n, int(state.decided_at[item_id] // width))
        got = decided_label(d)
        policy = d["policy_version"]
        label = state.consensus.get(policy, {}).get(item_id)
        weight = audit.get(policy, {}).get(item_id)
        if label is not None and weight is not None:
            rows[b]["expert"].append((label, got, weight))
        if item_id in truth:
            rows[b]["truth"].append((policy_truth(item_id, policy, truth[item_id]), got, 1.0))
    out = []
    # a bin's audit labels are few: carry them into the next bins until there are
    # MIN_AUDIT_ITEMS, so that each point rests on enough items (truth covers every item)
    carried: dict[str, list[tuple[str, str, float]]] = {"expert": [], "truth": []}
    for b, row in enumerate(rows):
        point: dict[str, Any] = {"t": (b + 0.5) * width}
        for key, least in (("expert", MIN_AUDIT_ITEMS), ("truth", 5)):
            pairs = carried[key] + row[key]
            k = None
            if len(pairs) >= least:
                k = _weighted(pairs)
                carried[key] = []
            else:
                carried[key] = pairs
            point[key] = k
            point[f"{key}_n"] = len(pairs) if k is not None else 0
        out.append(point)
    return out


def _mark_events(ax: Any, state: DemoState) -> None:
    for t, version in state.policy_events[1:]:
        ax.axvline(t, color="#c44e52", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"policy {version}",
            (t, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="#c44e52",
        )
    for e in state.adapter_events:
        if e["event"] in ("promoted", "rolled_back"):
            colour = "#55a868" if e["event"] == "promoted" else "#8c8c8c"
            ax.axvline(e["t"], color=colour, linestyle=":", linewidth=1.2)


def write_plots(
    out: Path, state: DemoState, truth: dict[str, str], audit: AuditWeights | None = None
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # kappa over time and per adapter
    series = kappa_series(state, truth, audit)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    for key, style, name in (
        (
            "expert",
            "o-",
            f"live decisions vs experts, audit draws (weighted, >= {MIN_AUDIT_ITEMS})",
        ),
        ("truth", "s--", "live decisions vs simulated truth"),
    ):
        pts = [(p["t"], p[key]) for p in series if p[key] is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, markersize=4, label=name)
    for v in state.verdicts:
        if v.candidate_kappa is not None:
            ax.scatter(
                v.at,
                v.candidate_kappa,
                marker="*",
                s=140,
                color="#55a868" if v.passed else "#c44e52",
                zorder=5,
                label="gate: promoted" if v.passed else "gate: refused",
            )
        if v.required_kappa is not None:
            ax.scatter(v.at, v.required_kappa, marker="_", s=200, color="black", zorder=5)
    _mark_events(ax, state)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower left")
    ax.set_ylim(-0.3, 1.05)
    ax.set_xlabel("seconds since the stream started")
    ax.set_ylabel("Cohen's kappa")
    ax.set_title("kappa over time (stars: gate verdicts, bars: kappa required)")
    per = {k: v for k, v in adapter_kappas(state, audit).items() if v["value"] is not None}
    names = list(per)
    bx.bar(range(len(names)), [per[n]["value"] for n in names], color="#4c72b0")
    bx.errorbar(
        range(len(names)),
        [per[n]["value"] for n in names],
        yerr=[
            [per[n]["value"] - per[n]["low"] for n in names],
            [per[n]["high"] - per[n]["value"] for n in names],
        ],
        fmt="none",
        ecolor="black",
        capsize=3,
    )
    bx.set_xticks(range(len(names)), [f"{n[:18]}\n({per[n]['items']})" for n in names], fontsize=7)
    bx.set_ylim(-0.3, 1.05)
    shown = f"{len(per)} with a {CONFIDENCE:.0%} interval" if per else "none with enough labels"
    bx.set_title(f"per adapter, audit draws ({shown})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "kappa.png", dpi=110)
    plt.close(fig)
    written.append("kappa.png")

    width, n = _bins(state)
    centres = [(b + 0.5) * width for b in range(n + 1)]

    # review volume by reason
    fig, ax = plt.subplots(figsize=(10, 4))
    counts: dict[str, list[int]] = {}
    for t, reason in state.review_times:
        counts.setdefault(reason, [0] * (n + 1))[min(n, int(t // width))] += 1
    bottom = [0] * (n + 1)
    for reason, row in sorted(counts.items()):
        ax.bar(
            centres,
            row,
            width * 0.9,
            bottom=bottom,
            label=reason,
            color=_REASON_COLOURS.get(reason),
        )
        bottom = [a + b for a, b in zip(bottom, row, strict=True)]
    _mark_events(ax, state)
    ax.set_xlabel("seconds since the stream started")
    ax.set_ylabel(f"review requests per {width:.0f} s")
    ax.set_title("review volume by reason")
    if counts:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "reviews.png", dpi=110)
    plt.close(fig)
    written.append("reviews.png")

    # throughput
    fig, ax = plt.subplots(figsize=(10, 4))
    decided = Counter(min(n, int(t // width)) for t in state.decided_at.values())
    ax.plot(centres, [decided[b] / width for b in range(n + 1)], "o-", label="decided per s")
    samples = state.samples
    if len(samples) > 1:
        t_in = [s["t"] for s in samples]
        rate_in = [0.0] + [
            (b["items_in"] - a["items_in"]) / max(b["t"] - a["t"], 1e-9)
            for a, b in itertools.pairwise(samples)
        ]
        ax.plot(t_in, rate_in, "-", alpha=0.6, label="produced per s")
    _mark_events(ax, state)
    ax.set_xlabel("seconds since the stream started")
    ax.set_ylabel("items per second")
    ax.set_title("throughput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    written.append("throughput.png")

    # drift signals
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    for name in ("input", "prediction"):
        pts = [(s["t"], s[f"drift_{name}"]) for s in samples if s.get(f"drift_{name}") is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=f"{name} drift p-value")
    ax.set_yscale("log")
    ax.axhline(1e-3, color="black", linewidth=0.8, linestyle="-.", label="threshold (default)")
    ax.set_title("input and prediction drift (lower: more drift)")
    ax.set_xlabel("seconds since the stream started")
    _mark_events(ax, state)
    ax.legend(fontsize=8)
    pts = [(s["t"], s["drift_concept"]) for s in samples if s.get("drift_concept") is not None]
    if pts:
        bx.plot(*zip(*pts, strict=True), color="#c44e52", label="disagreement with experts")
    bx.axhline(0.25, color="black", linewidth=0.8, linestyle="-.", label="threshold (default)")
    bx.set_ylim(0, 1)
    bx.set_title("concept drift")
    bx.set_xlabel("seconds since the stream started")
    _mark_events(bx, state)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "drift.png", dpi=110)
    plt.close(fig)
    written.append("drift.png")
    return written
