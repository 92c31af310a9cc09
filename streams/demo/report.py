"""The demo's report: the final kappa figures (through the product's scorer, on the current
policy's expert evaluation split), PNG plots (kappa over time and per adapter, review volume by
reason, throughput, drift with the policy change marked) and ``report.md``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from adapters.labels.agreement import kappa
from adapters.labels.consensus import consensus
from adapters.labels.store import LabelStore
from adapters.registry.store import AdapterRegistry
from models.scorer import Scorer
from streams.service.trainer import judge_live
from streams.wire.settings import Settings

if TYPE_CHECKING:
    from streams.demo.state import DemoState
from streams.demo.plots import adapter_kappas, write_plots

__all__ = ["consensus_labels", "final_figures", "write_report"]


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


def consensus_labels(votes: dict[str, dict[str, str]], excluded: set[str]) -> dict[str, str]:
    """item -> the trusted reviewers' majority label (items without one are left out)."""
    out = {}
    for item_id, item_votes in votes.items():
        label = consensus(item_id, item_votes, exclude=excluded).label
        if label is not None:
            out[item_id] = label
    return out


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
