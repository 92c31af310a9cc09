"""Label efficiency: how many expert labels each curation strategy needs to reach the model quality
that every label of the pool gives (the published method's headline, DESIGN.md). Pure: the data
arrive as arrays (labels, embeddings), every random draw takes its seed as an argument, and the
expensive model (the product's LoRA fine-tune) is passed in as a function, so the whole loop runs
in a second in tests with a head on synthetic embeddings.

How one run goes (choices documented here, measured by `borderline bench label-efficiency`):

- Test set: per seed, ``test_positives`` violating and ``test_negatives`` benign items drawn from
  the data and kept out of every pool; shared by the prevalences of that seed. Kappa on it is
  weighted (``sample_weight``) so that violating items carry the pool's share P of the weight.
- Pool: every remaining benign item (or ``pool_size``) plus violating items drawn so that their
  share is P. The seeds of every draw are recorded in the output.
- Seed labels: ``seed_labels`` items drawn uniformly from the pool; if fewer than
  ``seed_positives`` of them are violating, benign ones among them are swapped for randomly drawn
  violating items (at 1% prevalence ten random items rarely hold one, and a classifier needs both
  classes). Every strategy starts from the same seed labels.
- Rounds: each gap between checkpoints is covered in ``rounds_per_checkpoint`` equal rounds. Each
  round the cheap selection model (logistic regression, class_weight balanced, on the frozen
  embeddings) is refitted on the labels so far, scores the pool, and the strategy picks the
  round's budget among the unlabelled items; the labels come from the data. Strategies:
  ``boundary`` (the published method: `boundary_pairs` over every unlabelled pool item,
  ``max_pairs = budget // 2``), ``uncertainty`` (`top_uncertain`), ``uncertainty+diversity``
  (`uncertainty_diversity`) and ``random`` (`random_sample`). When boundary pairs fall short of
  the budget (an odd budget; few items predicted violating, so few pairs), the rest is topped up
  with the most uncertain items, and the top-ups are counted in the output.
- Checkpoints: the labels so far train the evaluated model (the caller's function: LoRA in the
  benchmark) and its decisions on the test set give the kappa. The random strategy goes on in
  coarse steps (x``tail_factor`` up to the whole pool), with the same model: one model kind for
  every point of every curve.
- Full-data reference: per seed, the evaluated model on that seed's whole pool, scored on that
  seed's test set (shared with random's whole-pool point: the same labels, fitted once).
- ``labels_to_95pct``: the smallest label count from which the mean kappa stays at or above
  0.95 of the mean full-data kappa at every larger measured count. The frozen head's curves and
  reference are reported beside, compared only with each other.

>>> from adapters.offline.draws import draw_pool, draw_test
>>> y = np.array([0] * 90 + [1] * 30)
>>> test = draw_test(y, positives=10, negatives=20, seed=0)
>>> pool = draw_pool(y, prevalence=0.1, seed=0, exclude=test)
>>> int(y[pool].sum()), pool.size
(8, 78)"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from adapters.labels.agreement import kappa
from adapters.offline.curves import (
    aggregate,
    labels_to_target,
    multiplier,
    round_figure,
    seed_spread,
)
from adapters.offline.draws import (
    STRATEGIES,
    TAG_SELECT,
    BenchConfig,
    EfficiencyError,
    binary_labels,
    draw_test,
    make_split,
    stream_rng,
)
from adapters.review.selectors import top_uncertain, uncertainty_diversity
from adapters.review.window import boundary_pairs, random_sample

__all__ = [
    "CURATED",
    "Head",
    "Trace",
    "TrainFn",
    "frozen_head",
    "label_schedule",
    "logistic_head",
    "remembered",
    "run_benchmark",
    "run_rounds",
    "select",
    "tail_points",
]


CURATED = ("boundary", "uncertainty", "uncertainty+diversity")


LORA = "lora"


FROZEN = "frozen-head"


"""Tiny sizes for tests and a first look: one seed, checkpoints 20/40, a pool of 200."""


Head = Callable[[np.ndarray, np.ndarray, int], Callable[[np.ndarray], np.ndarray]]


"""fit(x, y, seed) -> score(x) giving P(violating) per row: the cheap model of the rounds."""


def logistic_head(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Logistic regression on frozen embeddings, classes weighted to balance (scikit-learn)."""
    model = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit(x, y)
    column = int(np.flatnonzero(model.classes_ == 1)[0])

    def score(rows: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(rows)[:, column], dtype=np.float64)

    return score


def select(
    strategy: str,
    x: np.ndarray,
    p: np.ndarray,
    candidates: np.ndarray,
    budget: int,
    seed: int,
) -> tuple[list[int], int]:
    """Pick `budget` of the `candidates` (row positions of `x` and `p`) with the strategy; returns
    the picks and how many of them were topped up with the most uncertain items because the
    strategy proposed fewer (boundary pairs come two at a time, and only from overlapping
    clusters)."""
    ids = [str(int(c)) for c in candidates]
    xc, pc = x[candidates], np.clip(p[candidates], 0.0, 1.0)
    if strategy == "boundary":
        found = boundary_pairs(ids, xc, pc, max_pairs=budget // 2, seed=seed)
    elif strategy == "uncertainty":
        found = top_uncertain(ids, pc, budget=budget)
    elif strategy == "uncertainty+diversity":
        found = uncertainty_diversity(ids, xc, pc, budget=budget, seed=seed)
    elif strategy == "random":
        found = random_sample(ids, pc, budget=budget, seed=seed)
    else:
        raise EfficiencyError(f"unknown strategy {strategy!r}: use one of {STRATEGIES}")
    picks: list[int] = []
    seen: set[int] = set()
    for c in found:
        row = int(c.item_id)
        if row not in seen and len(picks) < budget:
            seen.add(row)
            picks.append(row)
    topped_up = 0
    if len(picks) < budget:
        for c in top_uncertain(ids, pc, budget=len(ids)):
            row = int(c.item_id)
            if row not in seen:
                seen.add(row)
                picks.append(row)
                topped_up += 1
                if len(picks) == budget:
                    break
    return picks, topped_up


def label_schedule(start: int, checkpoints: Sequence[int], rounds_per_checkpoint: int) -> list[int]:
    """Labels held after each round, from `start` (the seed labels): each gap between
    checkpoints split into `rounds_per_checkpoint` near-equal rounds.

    >>> label_schedule(10, [50, 100, 200], 2)
    [10, 30, 50, 75, 100, 150, 200]
    """
    out = [start]
    for cp in checkpoints:
        prev = out[-1]
        steps = np.linspace(prev, cp, rounds_per_checkpoint + 1)[1:]
        for n in (round(float(v)) for v in steps):
            if n > out[-1]:
                out.append(n)
    return out


def tail_points(last: int, pool_size: int, factor: int = 2) -> list[int]:
    """The random curve's coarse steps after the last checkpoint: x`factor` up to the pool.

    >>> tail_points(400, 3900)
    [800, 1600, 3200, 3900]
    """
    out: list[int] = []
    n = last
    while n < pool_size:
        n = min(n * factor, pool_size)
        out.append(n)
    return out


@dataclass
class Trace:
    """One strategy's labelling order over a pool (positions in the pool, seed labels first)."""

    strategy: str
    order: list[int] = field(default_factory=list)
    rounds: list[dict[str, int]] = field(default_factory=list)

    def labelled(self, n: int) -> np.ndarray:
        if n > len(self.order):
            raise EfficiencyError(f"{self.strategy}: only {len(self.order)} labels, not {n}")
        return np.asarray(self.order[:n], dtype=np.int64)


def run_rounds(
    strategy: str,
    x: np.ndarray,
    y: np.ndarray,
    initial: np.ndarray,
    schedule: Sequence[int],
    *,
    seed: int,
    head: Head = logistic_head,
    prevalence: float = 0.0,
) -> Trace:
    """Replay the rounds over one pool: refit `head` on the labels so far, score the pool, pick
    the round's budget among unlabelled items with `strategy`, take their labels from `y`.
    ``schedule[0]`` must equal the number of seed labels."""
    if schedule[0] != len(initial):
        raise EfficiencyError(f"schedule starts at {schedule[0]}, seed labels are {len(initial)}")
    if schedule[-1] > y.size:
        raise EfficiencyError(f"schedule reaches {schedule[-1]} labels, the pool has {y.size}")
    trace = Trace(strategy, [int(i) for i in initial])
    labelled = np.zeros(y.size, dtype=bool)
    labelled[initial] = True
    for step, target in enumerate(schedule[1:], start=1):
        rows = np.asarray(trace.order, dtype=np.int64)
        score = head(x[rows], y[rows], seed)
        p = score(x)
        candidates = np.flatnonzero(~labelled)
        budget = target - len(trace.order)
        picks, topped_up = select(
            strategy, x, p, candidates, budget, seed=_select_seed(seed, prevalence, step)
        )
        picks_arr = np.asarray(picks, dtype=np.int64)
        if picks_arr.size != budget or labelled[picks_arr].any():
            raise EfficiencyError(f"{strategy} picked {picks_arr.size} of {budget}, or a repeat")
        labelled[picks_arr] = True
        trace.order.extend(picks)
        trace.rounds.append(
            {
                "labels": len(trace.order),
                "picked": budget,
                "topped_up": topped_up,
                "violating_picked": int(y[picks_arr].sum()),
            }
        )
    return trace


def _select_seed(seed: int, prevalence: float, step: int) -> int:
    return int(stream_rng(seed, TAG_SELECT, prevalence, step).integers(0, 2**31 - 1))


TrainFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


"""train_and_decide(train_rows, test_rows, seed) -> 0/1 decisions on test_rows; rows index the
data set. The benchmark passes the product's LoRA fine-tune; tests pass the frozen head."""


def frozen_head(embeddings: np.ndarray, y: np.ndarray, head: Head = logistic_head) -> TrainFn:
    """A TrainFn that fits `head` on the frozen embeddings and decides at p >= 0.5."""

    def train_and_decide(train_rows: np.ndarray, test_rows: np.ndarray, seed: int) -> np.ndarray:
        score = head(embeddings[train_rows], y[train_rows], seed)
        return (score(embeddings[test_rows]) >= 0.5).astype(np.int64)

    return train_and_decide


def remembered(evaluate: TrainFn) -> TrainFn:
    """`evaluate` fitted once per (label set, test set, seed): random's last tail point is the
    whole pool, the same labels as the full-data reference, so the costliest fit is shared."""
    seen: dict[tuple[bytes, bytes, int], np.ndarray] = {}

    def fit(train_rows: np.ndarray, test_rows: np.ndarray, seed: int) -> np.ndarray:
        key = (np.sort(train_rows).tobytes(), np.asarray(test_rows).tobytes(), seed)
        if key not in seen:
            seen[key] = evaluate(np.sort(train_rows), test_rows, seed)
        return seen[key]

    return fit


def _kappa(y_true: np.ndarray, decided: np.ndarray, weights: np.ndarray) -> float | None:
    return kappa(y_true, np.asarray(decided, dtype=np.int64), sample_weight=weights)


def run_benchmark(
    y: np.ndarray,
    embeddings: np.ndarray,
    config: BenchConfig,
    *,
    evaluate: TrainFn,
    evaluate_source: str = LORA,
    head: Head = logistic_head,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Every prevalence, seed and strategy: the rounds, the evaluated model at the checkpoints
    (`evaluate`, LoRA in the benchmark) and the frozen head at the checkpoints and on the random
    tail; curves, full-data references, labels to 95% and the multiplier, per prevalence."""
    labels = binary_labels(y)
    if embeddings.shape[0] != labels.size:
        raise EfficiencyError(f"{embeddings.shape[0]} embeddings for {labels.size} labels")
    frozen = frozen_head(embeddings, labels, head)
    fit = remembered(evaluate)
    tests = {
        seed: draw_test(
            labels, positives=config.test_positives, negatives=config.test_negatives, seed=seed
        )
        for seed in config.seed_list
    }
    results: dict[str, Any] = {}
    for prevalence in config.prevalences:
        main: dict[str, dict[int, dict[int, float | None]]] = {s: {} for s in config.strategies}
        cheap: dict[str, dict[int, dict[int, float | None]]] = {s: {} for s in config.strategies}
        full_main: dict[int, float | None] = {}
        full_cheap: dict[int, float | None] = {}
        splits, rounds = [], {}
        for seed in config.seed_list:
            split = make_split(labels, tests[seed], prevalence, seed, config)
            splits.append(split.describe(labels))
            x_pool, y_pool = embeddings[split.pool], labels[split.pool]
            y_test = labels[split.test]
            schedule = label_schedule(
                len(split.initial), config.checkpoints, config.rounds_per_checkpoint
            )
            tail = tail_points(config.checkpoints[-1], split.pool.size, config.tail_factor)
            for strategy in config.strategies:
                log(f"P={prevalence} seed={seed} {strategy}: rounds")
                plan = schedule + (tail if strategy == "random" else [])
                trace = run_rounds(
                    strategy,
                    x_pool,
                    y_pool,
                    split.initial,
                    plan,
                    seed=seed,
                    head=head,
                    prevalence=prevalence,
                )
                rounds[f"{strategy}/seed{seed}"] = trace.rounds
                main[strategy][seed], cheap[strategy][seed] = {}, {}
                for n in [*config.checkpoints, *(tail if strategy == "random" else [])]:
                    rows = split.pool[trace.labelled(n)]
                    cheap[strategy][seed][n] = _kappa(
                        y_test, frozen(rows, split.test, seed), split.weights
                    )
                    log(f"P={prevalence} seed={seed} {strategy}: {evaluate_source} at {n}")
                    main[strategy][seed][n] = _kappa(
                        y_test, fit(rows, split.test, seed), split.weights
                    )
            full_cheap[seed] = _kappa(y_test, frozen(split.pool, split.test, seed), split.weights)
            log(f"P={prevalence} seed={seed}: {evaluate_source} on all {split.pool.size}")
            full_main[seed] = _kappa(y_test, fit(split.pool, split.test, seed), split.weights)
        results[str(prevalence)] = _summarise(
            config, main, cheap, full_main, full_cheap, splits, rounds, evaluate_source
        )
    return results


def _summarise(
    config: BenchConfig,
    main: Mapping[str, dict[int, dict[int, float | None]]],
    cheap: Mapping[str, dict[int, dict[int, float | None]]],
    full_main: Mapping[int, float | None],
    full_cheap: Mapping[int, float | None],
    splits: list[dict[str, Any]],
    rounds: Mapping[str, Any],
    source: str,
) -> dict[str, Any]:
    curves = {s: aggregate(main[s], source) for s in config.strategies}
    curves_cheap = {s: aggregate(cheap[s], FROZEN) for s in config.strategies}
    full = seed_spread(list(full_main.values()))
    full_f = seed_spread(list(full_cheap.values()))
    refs = {source: full["kappa"], FROZEN: full_f["kappa"]}
    to_95 = {s: labels_to_target(curves[s], refs) for s in config.strategies}
    to_95_cheap = {s: labels_to_target(curves_cheap[s], refs) for s in config.strategies}
    boundary_rounds = [r for key, rs in rounds.items() if key.startswith("boundary/") for r in rs]
    return {
        "splits": splits,
        "curves": curves,
        "full_data_kappa": full["kappa"],
        "full_data": {
            source: {
                **full,
                "per_seed": [round_figure(v) for v in full_main.values()],
                "seeds": list(full_main),
            },
            FROZEN: {
                **full_f,
                "per_seed": [round_figure(v) for v in full_cheap.values()],
                "seeds": list(full_cheap),
            },
        },
        "model_kind": {s: source for s in config.strategies},
        "labels_to_95pct": to_95,
        "multiplier_95": multiplier(to_95),
        "frozen_head": {
            "curves": curves_cheap,
            "full_data_kappa": full_f["kappa"],
            "labels_to_95pct": to_95_cheap,
            "multiplier_95": multiplier(to_95_cheap),
        },
        "boundary_labels_picked": sum(r["picked"] for r in boundary_rounds),
        "boundary_topped_up_labels": sum(r["topped_up"] for r in boundary_rounds),
        "rounds": rounds,
    }
