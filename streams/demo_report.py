"""The demo's report: the final kappa figures (through the product's scorer, on the current
policy's expert evaluation split), PNG plots (kappa over time and per adapter, review volume by
reason, throughput, drift with the policy change marked) and ``report.md``."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from adapters.agreement import consensus, kappa
from adapters.labels import LabelStore
from adapters.registry import AdapterRegistry
from models.scorer import Scorer
from streams.settings import Settings
from streams.trainer import judge_live

if TYPE_CHECKING:
    from streams.demo import DemoState

__all__ = [
    "PLOTS",
    "consensus_labels",
    "decided_label",
    "final_figures",
    "pairs_kappa",
    "write_report",
]

MIN_EXPERT_PAIRS = 20
PLOTS = ("kappa.png", "reviews.png", "throughput.png", "drift.png")
_REASON_COLOURS = {
    "uncertain": "#4c72b0",
    "boundary": "#dd8452",
    "audit": "#55a868",
    "second_opinion": "#8172b3",
    "policy_change": "#c44e52",
}


async def final_figures(
    settings: Settings, state: DemoState, truth: dict[str, str]
) -> dict[str, Any]:
    """Kappa of the first and the final adapter on the current policy's expert evaluation split
    (scored as the workers score), and of every adapter's live decisions against the experts'
    consensus; keeps the consensus labels on ``state`` for the plots."""
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    prefix = settings.redis.key_prefix
    store = LabelStore(redis, prefix)
    registry = AdapterRegistry(redis, prefix)
    try:
        excluded = await store.excluded()
        for version in {v for _, v in state.policy_events}:
            state.consensus[version] = consensus_labels(await store.all_votes(version), excluded)
        evaluation = await store.dataset(
            state.policy, "eval", eval_share=settings.review.eval_share
        )
        first = state.first_adapter
        figures: dict[str, Any] = {
            "eval_policy": state.policy,
            "eval_items": len(evaluation),
            "kappa_before": None,
            "final_kappa": None,
        }
        if evaluation:
            scorer = Scorer.from_dir(settings.model.dir, threads=settings.worker.scorer_threads)
            expert = [e.label for e in evaluation]
            for key, adapter_id in (("kappa_before", first), ("final_kappa", state.adapter)):
                if adapter_id and adapter_id != "?":
                    decided = await judge_live(scorer, adapter_id, evaluation, registry, settings)
                    figures[key] = kappa(expert, decided)
    finally:
        await redis.aclose()
    figures["kappa_by_adapter"] = adapter_kappas(state)
    return figures


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


def consensus_labels(votes: dict[str, dict[str, str]], excluded: set[str]) -> dict[str, str]:
    """item -> the trusted reviewers' majority label (items without one are left out)."""
    out = {}
    for item_id, item_votes in votes.items():
        label = consensus(item_id, item_votes, exclude=excluded).label
        if label is not None:
            out[item_id] = label
    return out


def adapter_kappas(state: DemoState) -> dict[str, dict[str, Any]]:
    """Per adapter: its live decisions' kappa against the experts' consensus on the items the
    experts labelled (under the policy each decision was made under)."""
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item_id, d in state.decisions.items():
        label = state.consensus.get(d["policy_version"], {}).get(item_id)
        if label is not None:
            pairs[d["adapter_version"]].append((label, decided_label(d)))
    return {
        adapter_id: {"kappa": pairs_kappa(rows), "items": len(rows)}
        for adapter_id, rows in pairs.items()
    }


def _bins(state: DemoState) -> tuple[float, int]:
    elapsed = max(state.now(), 1.0)
    width = max(10.0, elapsed / 24)
    return width, math.ceil(elapsed / width)


def kappa_series(state: DemoState, truth: dict[str, str]) -> list[dict[str, Any]]:
    """Per time bin: the decisions' kappa against the experts' consensus (items they labelled)
    and against the simulated truth (every item), under the policy each was decided under."""
    from adapters.simulation import policy_truth

    width, n = _bins(state)
    rows: list[dict[str, list[tuple[str, str]]]] = [defaultdict(list) for _ in range(n + 1)]
    for item_id, d in state.decisions.items():
        b = min(n, int(state.decided_at[item_id] // width))
        got = decided_label(d)
        label = state.consensus.get(d["policy_version"], {}).get(item_id)
        if label is not None:
            rows[b]["expert"].append((label, got))
        if item_id in truth:
            rows[b]["truth"].append(
                (policy_truth(item_id, d["policy_version"], truth[item_id]), got)
            )
    out = []
    # a bin's expert-labelled decisions are few: carry them into the next bins until there are
    # MIN_EXPERT_PAIRS, so that each point rests on enough items (truth covers every item)
    carried: dict[str, list[tuple[str, str]]] = {"expert": [], "truth": []}
    for b, row in enumerate(rows):
        point: dict[str, Any] = {"t": (b + 0.5) * width}
        for key, least in (("expert", MIN_EXPERT_PAIRS), ("truth", 5)):
            pairs = carried[key] + row[key]
            k = None
            if len(pairs) >= least:
                k = pairs_kappa(pairs)
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


def write_plots(out: Path, state: DemoState, truth: dict[str, str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # kappa over time and per adapter
    series = kappa_series(state, truth)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    for key, style, name in (
        ("expert", "o-", "live decisions vs expert consensus"),
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
    per = adapter_kappas(state)
    names = list(per)
    bx.bar(range(len(names)), [per[n]["kappa"] or 0.0 for n in names], color="#4c72b0")
    bx.set_xticks(range(len(names)), [f"{n[:14]}\n({per[n]['items']})" for n in names], fontsize=7)
    bx.set_ylim(-0.3, 1.05)
    bx.set_title("per adapter vs experts")
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


def _f(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_report(
    out: Path, state: DemoState, summary: dict[str, Any], truth: dict[str, str]
) -> None:
    plots = write_plots(out, state, truth)
    lines = [
        "# borderline demo report",
        "",
        "Expert labels come from a SIMULATED panel answering from the corpus's ground truth under",
        "the policy in force (policy v2 makes promotional mail, the corpus's hard-ham group,",
        "violating).",
        "",
        "## What happened",
        "",
    ]
    change = summary.get("policy_change_at_s")
    if change is None:
        lines.append("No policy change in this run.")
    else:
        lines.append(f"- Policy v2 was published {change:.0f} s into the stream.")
        if summary.get("seconds_to_promotion") is not None:
            lines.append(
                f"- The gate promoted an adapter for it {summary['seconds_to_promotion']:.0f} s "
                f"later, after {_f(summary.get('labels_to_promotion'))} expert labels under the "
                f"new policy: kappa {_f(summary.get('gate_kappa_at_promotion'))} against "
                f"{_f(summary.get('incumbent_kappa_at_promotion'))} for the incumbent."
            )
        else:
            lines.append("- No adapter for the new policy passed the gate during the run.")
    lines += [
        f"- On the final {summary.get('eval_policy', '?')} evaluation split "
        f"({summary.get('eval_items', 0)} expert-labelled items), kappa went from "
        f"{_f(summary.get('kappa_before'))} (the first adapter) to "
        f"{_f(summary.get('final_kappa'))} ({summary.get('final_adapter')}).",
        f"- {summary['items_decided']} of {summary['items_in']} items decided, "
        f"{summary['dead_letters']} dead letters, {summary['labels_collected']} expert labels.",
        "",
        "## Summary",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key, value in summary.items():
        if not isinstance(value, dict | list):
            lines.append(f"| {key} | {_f(value)} |")
    lines += ["", "## Timeline", "", "| t (s) | event |", "|---|---|"]
    events: list[tuple[float, str]] = [(t, f"policy {v} published") for t, v in state.policy_events]
    for v in state.verdicts:
        word = "promoted" if v.passed else "refused"
        events.append(
            (
                v.at,
                f"gate: {v.adapter_id} ({v.policy_version}) {word}, kappa "
                f"{_f(v.candidate_kappa)} vs required {_f(v.required_kappa)}, incumbent "
                f"{_f(v.incumbent_kappa)}, {v.eval_labels} eval items, {v.expert_labels} "
                f"expert labels: {v.reason}",
            )
        )
    for e in state.adapter_events:
        if e["event"] == "rolled_back":
            events.append((e["t"], f"rolled back to {e['adapter_id']}: {e.get('reason', '')}"))
    for t, text in sorted(events):
        lines.append(f"| {t:.0f} | {text} |")
    lines += [
        "",
        "## Adapters against the experts",
        "",
        "| adapter | live decisions labelled | kappa |",
        "|---|---|---|",
    ]
    for adapter_id, row in summary.get("kappa_by_adapter", {}).items():
        lines.append(f"| {adapter_id} | {row['items']} | {_f(row['kappa'])} |")
    lines += ["", "## Reviewers", "", "| reviewer | kappa vs consensus | status |", "|---|---|---|"]
    for reviewer, k in sorted(state.agreement.items()):
        status = "excluded from training" if reviewer in state.excluded else "trusted"
        lines.append(f"| {reviewer} | {_f(k)} | {status} |")
    lines += [
        "",
        f"Experts' mean pairwise kappa (the ceiling): {_f(state.ceiling)}",
        "",
        "## Plots",
        "",
    ]
    for name in plots:
        lines.append(f"![{name}]({name})")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines) + "\n")
