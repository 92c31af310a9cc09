"""Unit tests for adapters.efficiency, the label-efficiency benchmark's loop: pools at the asked
prevalence with recorded seeds, a held-out test set with enough violating items and weights that
put it back at the pool's share, the rounds (exact budgets, no item twice), the curve arithmetic
(labels to 95%, the multiplier, their undefined cases) and the strategies against random on
separable data. Synthetic embeddings only: no torch, milliseconds to seconds."""

from __future__ import annotations

import doctest
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import adapters.offline.curves
import adapters.offline.draws
import adapters.offline.efficiency
from adapters.labels.agreement import kappa
from adapters.offline.curves import aggregate, labels_to_target, multiplier
from adapters.offline.draws import (
    MIN_TEST_POSITIVES,
    QUICK,
    STRATEGIES,
    BenchConfig,
    EfficiencyError,
    check_feasible,
    draw_pool,
    draw_test,
    make_split,
    prevalence_weights,
)
from adapters.offline.efficiency import (
    CURATED,
    frozen_head,
    label_schedule,
    run_benchmark,
    run_rounds,
    select,
    tail_points,
)
from streams.cli.main import main


@cache
def _data(n_neg: int = 1500, n_pos: int = 300, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs, benign around -2.5 e0 and violating around +2.5 e0: separable but for
    a thin overlap, in enough dimensions that two or three violating examples fit it poorly."""
    rng = np.random.default_rng(42)
    centre = np.zeros(dim)
    centre[0] = 2.5
    x = np.vstack([rng.normal(-centre, 1.0, (n_neg, dim)), rng.normal(centre, 1.0, (n_pos, dim))])
    y = np.array([0] * n_neg + [1] * n_pos)
    order = rng.permutation(y.size)
    return x[order], y[order]


def test_doctest() -> None:
    results = [
        doctest.testmod(m)
        for m in (adapters.offline.efficiency, adapters.offline.draws, adapters.offline.curves)
    ]
    assert sum(r.attempted for r in results) > 0
    assert sum(r.failed for r in results) == 0


# --- test set and pool ----------------------------------------------------------------------------


@pytest.mark.parametrize("prevalence", [0.01, 0.05, 0.1])
def test_pool_has_the_asked_share_and_leaves_the_test_set_out(prevalence: float) -> None:
    _, y = _data()
    test = draw_test(y, positives=50, negatives=200, seed=3)
    pool = draw_pool(y, prevalence=prevalence, seed=3, exclude=test)
    assert not set(pool.tolist()) & set(test.tolist())
    share = y[pool].mean()
    assert abs(share - prevalence) <= 1.0 / pool.size
    assert (y[pool] == 0).sum() == (y == 0).sum() - 200  # every other benign item is in the pool


def test_pool_takes_fewer_benign_items_when_violating_ones_run_short() -> None:
    _, y = _data()
    test = draw_test(y, positives=50, negatives=200, seed=0)
    pool = draw_pool(y, prevalence=0.5, seed=0, exclude=test)
    assert y[pool].sum() == 250  # every remaining violating item
    assert (y[pool] == 0).sum() == 250


def test_draws_are_reproducible_for_a_seed_and_differ_between_seeds() -> None:
    _, y = _data()
    config = BenchConfig(seeds=1)
    test = draw_test(y, positives=50, negatives=300, seed=7)
    a = make_split(y, test, 0.05, 7, config)
    b = make_split(y, draw_test(y, positives=50, negatives=300, seed=7), 0.05, 7, config)
    c = make_split(y, draw_test(y, positives=50, negatives=300, seed=8), 0.05, 8, config)
    assert np.array_equal(a.pool, b.pool) and np.array_equal(a.initial, b.initial)
    assert not np.array_equal(a.test, c.test) and not np.array_equal(a.pool, c.pool)
    described = a.describe(y)
    assert described["seed"] == 7
    assert described["rng"].startswith("numpy default_rng([7,")
    assert described["test_violating"] == 50
    assert abs(described["pool_prevalence"] - 0.05) < 0.001


def test_seed_labels_hold_the_guaranteed_violating_items() -> None:
    _, y = _data()
    config = BenchConfig(seeds=1, seed_labels=10, seed_positives=2)
    test = draw_test(y, positives=50, negatives=300, seed=0)
    for seed in range(10):
        split = make_split(y, test, 0.01, seed, config)
        labels = y[split.pool[split.initial]]
        assert labels.size == 10 == np.unique(split.initial).size
        assert labels.sum() >= 2
        assert (labels == 0).sum() >= 1


def test_the_default_test_set_has_at_least_50_violating_items() -> None:
    assert BenchConfig().test_positives >= MIN_TEST_POSITIVES == 50
    _, y = _data()
    test = draw_test(y, positives=BenchConfig().test_positives, negatives=300, seed=0)
    assert y[test].sum() >= 50


def test_too_few_violating_items_is_a_clear_error() -> None:
    y = np.array([1] * 40 + [0] * 2000)
    with pytest.raises(EfficiencyError, match="40 violating items: the test set needs 50"):
        check_feasible(y, BenchConfig())
    # enough for the test set, not for a pool at 5% with its seed labels
    y = np.array([1] * 52 + [0] * 400)
    with pytest.raises(EfficiencyError, match=r"prevalence 0\.05 would hold 2 violating"):
        check_feasible(y, BenchConfig(prevalences=(0.05,), test_negatives=100))


@pytest.mark.parametrize("prevalence", [0.01, 0.05, 0.3])
def test_weights_put_the_test_set_back_at_the_pool_share(prevalence: float) -> None:
    y_test = np.array([1] * 50 + [0] * 300)
    w = prevalence_weights(y_test, prevalence)
    assert w[y_test == 1].sum() / w.sum() == pytest.approx(prevalence)
    assert w.mean() == pytest.approx(1.0)


def test_weighted_kappa_equals_kappa_on_the_resampled_test_set() -> None:
    """Weights 1:2 are the same as listing every benign item twice."""
    y_test = np.array([1, 1, 0, 0, 0, 0])
    decided = np.array([1, 0, 1, 0, 0, 0])
    w = prevalence_weights(y_test, 0.2)  # violating 0.6 each, benign 1.2 each
    assert w[0] * 2 == pytest.approx(w[2])
    doubled = np.r_[y_test[:2], y_test[2:], y_test[2:]]
    doubled_decided = np.r_[decided[:2], decided[2:], decided[2:]]
    assert kappa(y_test, decided, sample_weight=w) == pytest.approx(kappa(doubled, doubled_decided))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(EfficiencyError, match=r"prevalence 1\.5"):
        BenchConfig(prevalences=(1.5,))
    with pytest.raises(EfficiencyError, match="random"):
        BenchConfig(strategies=("uncertainty",))
    with pytest.raises(EfficiencyError, match="must exceed the seed labels"):
        BenchConfig(checkpoints=(10, 20))
    with pytest.raises(EfficiencyError, match="ascending"):
        BenchConfig(checkpoints=(100, 50))


# --- rounds ---------------------------------------------------------------------------------------


def test_schedule_and_tail() -> None:
    assert label_schedule(10, [50, 100, 200, 400], 2) == [10, 30, 50, 75, 100, 150, 200, 300, 400]
    assert label_schedule(10, [20, 40], 1) == [10, 20, 40]
    assert tail_points(400, 401) == [401]
    assert tail_points(400, 400) == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_round_labels_exactly_its_budget_and_never_an_item_twice(strategy: str) -> None:
    x, y = _data()
    config = BenchConfig(seeds=1)
    split = make_split(y, draw_test(y, positives=50, negatives=300, seed=1), 0.05, 1, config)
    schedule = label_schedule(10, [30, 60], 2)
    trace = run_rounds(strategy, x[split.pool], y[split.pool], split.initial, schedule, seed=1)
    assert [r["labels"] for r in trace.rounds] == schedule[1:]
    assert [r["picked"] for r in trace.rounds] == list(np.diff(schedule))
    assert len(trace.order) == len(set(trace.order)) == 60
    assert trace.order[:10] == split.initial.tolist()
    assert all(0 <= i < split.pool.size for i in trace.order)


def test_boundary_tops_up_when_pairs_run_short() -> None:
    """An odd budget cannot be filled with pairs: the last pick is the most uncertain one left."""
    x, _ = _data()
    p = np.clip(0.5 + 0.2 * x[:, 0], 0.0, 1.0)
    candidates = np.arange(500)
    picks, topped_up = select("boundary", x, p, candidates, 7, seed=0)
    assert len(picks) == len(set(picks)) == 7
    assert topped_up == 1


def test_run_benchmark_calls_the_training_function_at_every_checkpoint() -> None:
    """The LoRA step is a function argument: a fake one sees each checkpoint's labelled rows,
    random's tail included (one model kind for every point), and the full-data reference is
    fitted per seed, shared with random's last point (the same labels: the whole pool)."""
    x, y = _data()
    config = BenchConfig(
        prevalences=(0.05,), seeds=2, checkpoints=(20, 40), test_negatives=100, pool_size=600
    )
    calls: list[tuple[int, frozenset[int], frozenset[int], int]] = []
    frozen = frozen_head(x, y)

    def fake_train(train_rows: np.ndarray, test_rows: np.ndarray, seed: int) -> np.ndarray:
        calls.append((train_rows.size, frozenset(train_rows), frozenset(test_rows), seed))
        return frozen(train_rows, test_rows, seed)

    result = run_benchmark(y, x, config, evaluate=fake_train)["0.05"]
    sizes = [c[0] for c in calls]
    pool_size = result["splits"][0]["pool_size"]
    tail = tail_points(40, pool_size, config.tail_factor)
    assert tail[-1] == pool_size
    # 3 curated strategies x 2 checkpoints, random's checkpoints and tail; per seed
    assert sizes == ([20, 40] * 3 + [20, 40, *tail]) * 2
    for size, train, test, _ in calls:
        assert len(train) == size and not train & test
    assert {c[3] for c in calls} == {0, 1}
    curves = result["curves"]
    assert set(curves) == set(STRATEGIES)
    assert result["model_kind"] == dict.fromkeys(STRATEGIES, "lora")
    assert [pt["labels"] for pt in curves["uncertainty"]] == [20, 40]
    assert all(pt["kappa_source"] == "lora" for c in curves.values() for pt in c)
    assert [pt["labels"] for pt in curves["random"]] == [20, 40, *tail]
    assert all(len(pt["per_seed"]) == 2 for pt in curves["boundary"])
    # the reference per seed, each on its own test set, equal to random's whole-pool point
    assert result["full_data"]["lora"]["seeds"] == [0, 1]
    assert result["full_data"]["lora"]["per_seed"] == curves["random"][-1]["per_seed"]
    assert len(result["full_data"]["frozen-head"]["per_seed"]) == 2


def test_strategies_beat_random_on_separable_data_at_a_small_budget() -> None:
    x, y = _data()
    config = BenchConfig(
        prevalences=(0.02,),
        seeds=3,
        checkpoints=(30, 60),
        test_positives=50,
        test_negatives=300,
        pool_size=800,
    )
    curves = run_benchmark(y, x, config, evaluate=frozen_head(x, y))["0.02"]["curves"]
    for n in (30, 60):
        at = {s: next(pt["kappa"] for pt in curves[s] if pt["labels"] == n) for s in STRATEGIES}
        for strategy in CURATED:
            assert at[strategy] > at["random"] + 0.03, (n, at)


# --- curve arithmetic -----------------------------------------------------------------------------


def test_aggregate_gives_mean_spread_and_per_seed_values() -> None:
    points = aggregate({0: {50: 0.5, 100: 0.7}, 1: {50: 0.7, 100: None}}, "lora")
    assert points[0]["labels"] == 50 and points[0]["kappa"] == pytest.approx(0.6)
    assert points[0]["spread"]["min"] == 0.5 and points[0]["spread"]["max"] == 0.7
    assert points[0]["spread"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert points[1]["kappa"] == 0.7 and points[1]["spread"]["undefined"] == 1
    assert points[1]["per_seed"] == [0.7, None]
    assert aggregate({0: {50: None}}, "lora")[0]["kappa"] is None


def test_labels_to_95_is_where_the_curve_stays_above_the_target() -> None:
    def curve(*points: tuple[int, float | None]) -> list[dict[str, object]]:
        return [{"labels": n, "kappa": k, "kappa_source": "lora"} for n, k in points]

    ref = {"lora": 0.8}  # target 0.76
    # a first crossing that falls again does not count (the curve of issue 11: 0.602 -> 0.500)
    assert labels_to_target(curve((50, 0.5), (200, 0.78), (400, 0.70), (800, 0.77)), ref) == 800
    assert labels_to_target(curve((50, 0.77), (200, 0.78), (400, 0.79)), ref) == 50
    assert labels_to_target(curve((50, 0.77), (200, 0.70)), ref) is None
    assert labels_to_target(curve((400, 0.9), (50, 0.2), (200, 0.76)), ref) == 200  # any order
    assert labels_to_target(curve((50, 0.9), (200, None)), ref) is None
    assert labels_to_target(curve((50, 0.9)), {"lora": None}) is None
    assert labels_to_target(curve((50, 0.9)), {"lora": -0.1}) is None
    # a point of another kind is judged against that kind's reference
    mixed = [*curve((50, 0.77)), {"labels": 800, "kappa": 0.6, "kappa_source": "frozen-head"}]
    assert labels_to_target(mixed, {"lora": 0.8, "frozen-head": 0.6}) == 50
    assert labels_to_target(mixed, {"lora": 0.8, "frozen-head": 0.9}) is None


def test_multiplier_uses_the_best_curated_strategy() -> None:
    assert multiplier({"random": 1600, "boundary": 200, "uncertainty": 100}) == 16.0
    assert multiplier({"random": 1600, "boundary": None, "uncertainty": 400}) == 4.0
    assert multiplier({"random": None, "boundary": 200}) is None
    assert multiplier({"random": 1600, "boundary": None, "uncertainty": None}) is None
    assert multiplier({"random": 1600}) is None


def test_quick_settings_are_tiny() -> None:
    assert QUICK.seeds == 1 and QUICK.checkpoints == (20, 40)
    assert QUICK.pool_size is not None and QUICK.pool_size <= 200


# --- the command's refusals (before any embedding or training) ------------------------------------


def _tiny_jsonl(path: Path, violating: int, benign: int) -> Path:
    lines = [
        json.dumps({"id": f"i{k}", "text": f"message {k}", "label": int(k < violating)})
        for k in range(violating + benign)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--prevalence", "1.5"], "prevalence 1.5 must lie strictly between 0 and 1"),
        ([], "12 violating items: the test set needs 50"),
    ],
)
def test_the_command_reports_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    data = _tiny_jsonl(tmp_path / "tiny.jsonl", violating=12, benign=300)
    argv = ["bench", "label-efficiency", "--data", str(data), "--json", str(tmp_path / "o.json")]
    code = main([*argv, "--cache-dir", str(tmp_path / "cache"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert says in err
    assert not (tmp_path / "cache").exists()  # refused before computing any embedding
