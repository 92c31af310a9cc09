"""Unit tests for the figures of `borderline bench swap` (streams.bench.swap.swap_figures) on a
made-up timeline: two workers, two promotions, batches of known starts and ends; what the first
decision, the batch cycle and the decomposition of a swap (notice, activation, wait) come to, and
a batch that started after the switch on the old adapter counted as late."""

from __future__ import annotations

from typing import Any

import pytest

from streams.bench.swap import phase_parts, swap_figures

T0 = 1_700_000_000.0


def _batch(
    worker: str, adapter: str, start: float, scoring: float, n: int = 2
) -> list[dict[str, Any]]:
    decided = T0 + start + scoring
    return [
        {
            "worker": worker,
            "adapter_version": adapter,
            "decided_at": decided,
            "scoring_s": scoring if k else 0.0,  # a cached item says 0; its batch does not
        }
        for k in range(n)
    ]


def _timeline(late: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # w1: batches every 0.1 s; the promotion of a1 at 0.25 s lands during the batch of 0.2 s
    for start in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]:
        adapter = "a0" if start < 0.3 else ("a1" if start < 0.6 else "a2")
        out += _batch("w1", adapter, start, 0.08)
    # w2: its first batch on a1 starts at 0.35 s; with `late`, the one at 0.32 s still had a0
    for start in [0.02, 0.12, 0.22, *([0.32] if late else []), 0.35, 0.45, 0.62]:
        adapter = "a0" if start < 0.33 else ("a1" if start < 0.6 else "a2")
        out += _batch("w2", adapter, start, 0.08)
    return out


RECEIVED = {
    ("w1", "a1"): [(T0 + 0.26, 0.005)],
    ("w2", "a1"): [(T0 + 0.27, 0.004)],
    ("w1", "a2"): [(T0 + 0.56, 0.005)],
    ("w2", "a2"): [(T0 + 0.57, 0.005)],
}
PROMOTIONS = [("a1", T0 + 0.25), ("a2", T0 + 0.55)]


def test_first_decision_batch_cycle_and_the_parts_of_a_swap() -> None:
    f = swap_figures(_timeline(late=False), RECEIVED, PROMOTIONS, ["w1", "w2"], batch_max=2)
    # a1: w1 starts on it at 0.30 (50 ms after the announcement), w2 at 0.35 (100 ms);
    # a2: w1 at 0.60 (50 ms), w2 at 0.62 (70 ms)
    assert f["first_decision_ms_p50"] == pytest.approx(60.0)
    assert f["first_decision_ms_max"] == pytest.approx(100.0)
    assert f["first_decision_out_ms_max"] == pytest.approx(180.0)
    assert f["batch_ms_p50"] == pytest.approx(100.0)
    assert f["notice_ms_max"] == pytest.approx(20.0)
    assert f["activation_ms_max"] == pytest.approx(5.0)
    assert f["wait_ms_max"] == pytest.approx(350 - 274)
    assert f["late_batches"] == 0 and f["swaps_measured"] == 4
    assert f["all_workers_s"] == pytest.approx(0.18)


def test_a_batch_that_started_after_the_switch_on_the_old_adapter_is_late() -> None:
    f = swap_figures(_timeline(late=True), RECEIVED, PROMOTIONS, ["w1", "w2"], batch_max=2)
    assert f["late_batches"] == 1


def test_no_decision_on_a_promoted_adapter_is_an_error_not_a_figure() -> None:
    with pytest.raises(RuntimeError, match="no swap could be measured"):
        swap_figures(
            _timeline(late=False), RECEIVED, [("a9", T0 + 0.25)], ["w1", "w2"], batch_max=2
        )


def test_a_cycle_counts_only_when_items_were_waiting() -> None:
    with pytest.raises(RuntimeError, match="no full batch"):
        swap_figures(_timeline(late=False), RECEIVED, PROMOTIONS, ["w1", "w2"], batch_max=3)


def _run(phase: str, starts: list[float], scoring: float, worker: str = "w1") -> list[dict]:
    return [
        {**d, "item_id": f"{phase}-{k}-{worker}-{start}"}
        for start in starts
        for k, d in enumerate(_batch(worker, "a0", start, scoring))
    ]


def test_phase_parts_split_a_loss_during_swaps_into_idle_scorers_and_slower_ones() -> None:
    """Baselines: back-to-back batches of 0.1 s. Swap run: the same batches with 0.1 s idle
    between them (half the time busy), then the model 25% slower (0.125 s a batch)."""
    base = _run("base1", [0.0, 0.1, 0.2, 0.3], 0.1) + _run("base2", [9.0, 9.1, 9.2, 9.3], 0.1)
    idle = phase_parts(base + _run("swap", [5.0, 5.2, 5.4, 5.6], 0.1))
    assert idle["phases"]["swap"]["busy_share"] == pytest.approx(4 * 0.1 / 0.7, abs=1e-3)
    assert idle["busy_share_ratio_during_swaps"] == pytest.approx(0.571, abs=1e-3)
    assert idle["model_items_per_s_ratio_during_swaps"] == 1.0
    slow = phase_parts(base + _run("swap", [5.0, 5.125, 5.25, 5.375], 0.125))
    assert slow["busy_share_ratio_during_swaps"] == 1.0
    assert slow["model_items_per_s_ratio_during_swaps"] == 0.8
    assert slow["phases"]["base1"] == {
        "items": 8,
        "batches": 4,
        "wall_s": 0.4,
        "model_s": 0.4,
        "busy_share": 1.0,
        "model_items_per_s": 20.0,
        "idle_s": 0.0,
        "idle_gap_ms_max": 0.0,
        "idle_s_in_swap_gaps": 0.0,
        "swap_gaps": 0,
    }


def test_phase_parts_place_the_idle_gaps_that_a_switch_overlapped() -> None:
    """Three 0.1 s gaps in the swap run; the worker switched adapters during the second."""
    base = _run("base1", [0.0, 0.1, 0.2, 0.3], 0.1)
    swap = _run("swap", [5.0, 5.2, 5.4, 5.6], 0.1)
    switches = {"w1": [(T0 + 5.32, 0.01)], "w2": [(T0 + 5.08, 0.5)]}  # w2 has no batch here
    parts = phase_parts(base + swap, swaps=switches)["phases"]["swap"]
    assert parts["idle_s"] == pytest.approx(0.3, abs=1e-3)
    assert parts["idle_gap_ms_max"] == pytest.approx(100.0, abs=0.1)
    assert parts["idle_s_in_swap_gaps"] == pytest.approx(0.1, abs=1e-3)
    assert parts["swap_gaps"] == 1


def test_phase_parts_count_two_workers_wall_time_once_each() -> None:
    two = _run("base1", [0.0, 0.1], 0.1, "w1") + _run("base1", [0.0, 0.1], 0.1, "w2")
    parts = phase_parts(two + _run("swap", [1.0, 1.1], 0.1, "w1"))
    assert parts["phases"]["base1"]["busy_share"] == 1.0
    assert "busy_share_ratio_during_swaps" in parts  # base2 missing: compared with base1 alone
