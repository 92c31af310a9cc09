"""The demo's report: the final kappa figures (through the product's scorer, on the current
policy's audit draws, weighted by draw probability, with an interval), PNG plots (kappa over
time and per adapter, review volume by reason, throughput, drift with the policy change marked)
and ``report.md``. Every kappa against the experts is computed on the audit draws; the figure on
every reviewed item is shown only labelled as biased (those items were chosen for being
uncertain)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from adapters.adapt.estimate import draw_weight, estimate_kappa
from adapters.labels.consensus import consensus
from adapters.labels.store import LabeledExample, LabelStore
from adapters.registry.store import AdapterRegistry
from adapters.review.opinions import labels_per_item
from models.scorer import Scorer
from streams.service.trainer import judge_live
from streams.wire.security import redis_options
from streams.wire.settings import Settings

if TYPE_CHECKING:
    from streams.demo.state import DemoState
from streams.demo.plots import MIN_AUDIT_ITEMS, adapter_kappas, write_plots

__all__ = ["consensus_labels", "final_figures", "write_report"]


async def audit_weights(store: LabelStore, policy: str, default_rate: float) -> dict[str, float]:
    """The audit-drawn labelled items of ``policy`` with their weights (1 / draw probability)."""
    votes = await store.all_votes(policy)
    out = {}
    for item_id, item in (await store.reviewed_items(list(votes))).items():
        weight = draw_weight(
            item.audit_drawn, item.audit_rate, item.reason, default_rate=default_rate
        )
        if weight is not None:
            out[item_id] = weight
    return out


async def final_figures(
    settings: Settings, state: DemoState, truth: dict[str, str]
) -> dict[str, Any]:
    """Weighted kappa of the first and the final adapter on the current policy's audit draws
    (scored as the workers score), with intervals, and of every adapter's live decisions on the
    audit draws of the policy they were made under; keeps the consensus labels on ``state`` for
    the plots and returns the audit weights (``audit_items``) for them."""
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    prefix = settings.redis.key_prefix
    store = LabelStore(redis, prefix)
    registry = AdapterRegistry(redis, prefix)
    rate = settings.review.audit_rate
    try:
        excluded = await store.excluded()
        audit: dict[str, dict[str, float]] = {}
        spent = labelled = 0
        for version in {v for _, v in state.policy_events} | {state.policy}:
            votes = await store.all_votes(version)
            spent += sum(len(v) for v in votes.values())
            labelled += sum(1 for v in votes.values() if v)
            state.consensus[version] = consensus_labels(votes, excluded)
            audit[version] = await audit_weights(store, version, rate)
        labels = state.consensus.get(state.policy, {})
        drawn = sorted(i for i in audit.get(state.policy, {}) if i in labels)
        reviewed = await store.reviewed_items(drawn)
        evaluation = [
            LabeledExample(i, reviewed[i].text, labels[i], 0) for i in drawn if i in reviewed
        ]
        weights = [audit[state.policy][e.item_id] for e in evaluation]
        first = state.first_adapter
        figures: dict[str, Any] = {
            "eval_policy": state.policy,
            "eval_items": len(evaluation),
            "kappa_before": None,
            "final_kappa": None,
            # expert labels stored per labelled item, every policy (second opinions included)
            "labels_per_item": labels_per_item(spent, labelled),
        }
        if evaluation:
            scorer = Scorer.from_dir(settings.model.dir, threads=settings.worker.scorer_threads)
            expert = [e.label for e in evaluation]
            for key, adapter_id in (("kappa_before", first), ("final_kappa", state.adapter)):
                if adapter_id and adapter_id != "?":
                    decided = await judge_live(scorer, adapter_id, evaluation, registry, settings)
                    e = estimate_kappa(expert, decided, weights, min_items=MIN_AUDIT_ITEMS)
                    figures[key] = e.value
                    figures[f"{key}_ci"] = None if e.low is None else [e.low, e.high]
                    figures[f"{key}_figure"] = e.describe()
    finally:
        await redis.aclose()
    # why the collector asked the second opinions in labels_per_item (its metric, last scrape)
    figures["second_opinions_by_why"] = {
        why: int(n) for why, n in sorted(state.second_opinions_why.items())
    }
    figures["kappa_by_adapter"] = adapter_kappas(state, audit)
    figures["audit_items"] = audit
    return figures


def consensus_labels(votes: dict[str, dict[str, str]], excluded: set[str]) -> dict[str, str]:
    """item -> the trusted reviewers' majority label (items without one are left out)."""
    out = {}
    for item_id, item_votes in votes.items():
        label = consensus(item_id, item_votes, exclude=excluded).label
        if label is not None:
            out[item_id] = label
    return out


def _interval_words(summary: dict[str, Any]) -> str:
    rows = list(summary.get("kappa_by_adapter", {}).values())
    confidence = rows[0]["confidence"] if rows else 0.9
    return f"{confidence:.0%} bootstrap interval"


def _f(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_report(
    out: Path, state: DemoState, summary: dict[str, Any], truth: dict[str, str]
) -> None:
    plots = write_plots(out, state, truth, summary.get("audit_items"))
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
    if state.trainer:
        lines.append(f"- The trainer's last step: {state.trainer}.")
    if state.live_kappa:
        lines.append(
            f"- The live adapter on the audit draws since it went live: {state.live_kappa}."
        )
    before = summary.get("kappa_before_figure", _f(summary.get("kappa_before")))
    after = summary.get("final_kappa_figure", _f(summary.get("final_kappa")))
    lines += [
        f"- On the final {summary.get('eval_policy', '?')} policy's audit draws "
        f"({summary.get('eval_items', 0)} expert-labelled items drawn at random, weighted by "
        f"draw probability), kappa went from {before} (the first adapter) to {after} "
        f"({summary.get('final_adapter')}).",
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
        "Live decisions against expert consensus on the audit draws of the policy each was made",
        f"under (weighted, {_interval_words(summary)}; fewer than {MIN_AUDIT_ITEMS} audit labels:",
        "no number). The last two columns are on every item the experts labelled: BIASED, those",
        "items were mostly chosen because the adapter was unsure of them.",
        "",
        "| adapter (policy) | audit labels | kappa on audit draws | reviewed items |"
        " kappa on reviewed items (biased) |",
        "|---|---|---|---|---|",
    ]
    for key, row in summary.get("kappa_by_adapter", {}).items():
        lines.append(
            f"| {key} | {row['items']} | {row['figure']} | {row['reviewed_items']} | "
            f"{_f(row['reviewed_kappa_biased'])} |"
        )
    lines += ["", "## Reviewers", "", "| reviewer | kappa vs trusted consensus | status |"]
    lines += ["|---|---|---|"]
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
