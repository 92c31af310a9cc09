"""The label-efficiency benchmark's output: the summary table and one plot per prevalence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["summary_table", "write_plot"]


_SHORT = {"uncertainty+diversity": "unc+div"}


def _cell(point: dict[str, Any] | None) -> str:
    if point is None:
        return "-"
    if point["kappa"] is None:
        return "undefined"
    spread = point["spread"]["std"] if point["spread"] else 0.0
    mark = "" if point["kappa_source"] == "lora" else "*"
    return f"{point['kappa']:.3f}±{spread:.3f}{mark}"


def summary_table(results: dict[str, Any]) -> str:
    """The curves as a readable table per prevalence: labels down, strategies across (mean ± std
    over seeds; * marks a point that is not LoRA), then the reference and the headline
    figures."""
    lines: list[str] = []
    for prevalence, res in results["prevalences"].items():
        split = res["splits"][0]
        curves: dict[str, list[dict[str, Any]]] = res["curves"]
        strategies = list(curves)
        counts = sorted({pt["labels"] for c in curves.values() for pt in c})
        lines.append(
            f"P={prevalence}: pool {split['pool_size']} items ({split['pool_violating']} "
            f"violating), test {split['test_size']} ({split['test_violating']} violating, "
            f"weighted to P), seeds {[s['seed'] for s in res['splits']]}"
        )
        header = f"{'labels':>7}  " + "  ".join(f"{_SHORT.get(s, s):>18}" for s in strategies)
        lines.append(header)
        for n in counts:
            row = [next((pt for pt in curves[s] if pt["labels"] == n), None) for s in strategies]
            lines.append(f"{n:>7}  " + "  ".join(f"{_cell(pt):>18}" for pt in row))
        full = res["full_data"]
        lines.append(
            f"full data: LoRA {_fmt(full['lora']['kappa'])} (seeds {full['lora']['seeds']}), "
            f"frozen head {_fmt(full['frozen-head']['kappa'])}"
        )
        to95 = ", ".join(f"{_SHORT.get(s, s)} {n}" for s, n in res["labels_to_95pct"].items())
        lines.append(f"labels to 95%: {to95}; multiplier_95 {res['multiplier_95']}")
        fh = res["frozen_head"]
        to95f = ", ".join(f"{_SHORT.get(s, s)} {n}" for s, n in fh["labels_to_95pct"].items())
        lines.append(
            f"frozen head only: labels to 95%: {to95f}; multiplier_95 {fh['multiplier_95']}"
        )
        lines.append("")
    kinds = sorted(
        {k for res in results["prevalences"].values() for k in res.get("model_kind", {}).values()}
    )
    lines.append(f"model kind of every curve: {', '.join(kinds) or '?'} (* marks any other)")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def write_plot(path: Path, prevalence: str, res: dict[str, Any]) -> None:
    """Kappa against labels (log x) for one prevalence: LoRA curves with their spread (a point of
    another kind dashed), the full-data LoRA kappa and its 95% line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for k, (strategy, curve) in enumerate(res["curves"].items()):
        colour = f"C{k}"
        pts = [pt for pt in curve if pt["kappa"] is not None]
        for source, style in (("lora", "-o"), ("frozen-head", "--s")):
            part = [pt for pt in pts if pt["kappa_source"] == source]
            if not part:
                continue
            xs = [pt["labels"] for pt in part]
            ys = [pt["kappa"] for pt in part]
            err = [pt["spread"]["std"] for pt in part]
            label = strategy if source == "lora" else f"{strategy} (frozen head)"
            ax.errorbar(
                xs, ys, yerr=err, fmt=style, color=colour, capsize=3, markersize=4, label=label
            )
    ref = res["full_data_kappa"]
    if ref is not None:
        ax.axhline(ref, color="grey", linewidth=1, label=f"full data, LoRA ({ref:.3f})")
        ax.axhline(0.95 * ref, color="grey", linewidth=1, linestyle=":", label="95% of it")
    frozen_ref = res["frozen_head"]["full_data_kappa"]
    if frozen_ref is not None:
        ax.axhline(
            frozen_ref,
            color="tan",
            linewidth=1,
            linestyle="-.",
            label=f"full data, frozen head ({frozen_ref:.3f})",
        )
    ax.set_xscale("log")
    ax.set_xticks(sorted({pt["labels"] for c in res["curves"].values() for pt in c}))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("expert labels (log scale)")
    ax.set_ylabel("Cohen's kappa on the test set (weighted to P)")
    ax.set_title(f"label efficiency at prevalence {prevalence}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
