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
  coarse steps (x2 up to the whole pool), scored by the frozen head only.
- ``labels_to_95pct``: the fewest labels whose mean kappa reaches 0.95 of the full-data kappa of
  the same model kind (LoRA points against the LoRA reference, frozen-head points against the
  frozen-head reference).

>>> y = np.array([0] * 90 + [1] * 30)
>>> test = draw_test(y, positives=10, negatives=20, seed=0)
>>> pool = draw_pool(y, prevalence=0.1, seed=0, exclude=test)
>>> int(y[pool].sum()), pool.size
(8, 78)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from adapters.agreement import kappa
from adapters.curation import boundary_pairs, random_sample, top_uncertain, uncertainty_diversity
from models.errors import BorderlineError

__all__ = [
    "CURATED",
    "DEFAULT_CHECKPOINTS",
    "DEFAULT_PREVALENCES",
    "QUICK",
    "STRATEGIES",
    "TARGET_SHARE",
    "BenchConfig",
    "EfficiencyError",
    "Head",
    "Split",
    "Trace",
    "TrainFn",
    "aggregate",
    "check_feasible",
    "draw_pool",
    "draw_test",
    "frozen_head",
    "label_schedule",
    "labels_to_target",
    "logistic_head",
    "lora_epochs",
    "make_split",
    "multiplier",
    "prevalence_weights",
    "run_benchmark",
    "run_rounds",
    "seed_labels",
    "select",
    "tail_points",
]

STRATEGIES = ("boundary", "uncertainty", "uncertainty+diversity", "random")
CURATED = ("boundary", "uncertainty", "uncertainty+diversity")
DEFAULT_PREVALENCES = (0.01, 0.05)
DEFAULT_CHECKPOINTS = (50, 100, 200, 400)
TARGET_SHARE = 0.95
MIN_TEST_POSITIVES = 50
LORA = "lora"
FROZEN = "frozen-head"

# Stream tags: every draw gets its own generator, seeded with [seed, tag, prevalence in ppm].
_TEST, _POOL, _SEED_LABELS, _SELECT = 0, 1, 2, 3


class EfficiencyError(BorderlineError):
    """The benchmark cannot run on this data or with these settings; the message says which
    number is short."""


def _rng(seed: int, tag: int, prevalence: float = 0.0, step: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, tag, round(prevalence * 1_000_000), step])


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    prevalences: tuple[float, ...] = DEFAULT_PREVALENCES
    seeds: int = 3
    first_seed: int = 0
    checkpoints: tuple[int, ...] = DEFAULT_CHECKPOINTS
    rounds_per_checkpoint: int = 2
    seed_labels: int = 10
    seed_positives: int = 2
    test_positives: int = MIN_TEST_POSITIVES
    test_negatives: int = 300
    pool_size: int | None = None
    tail_factor: int = 2
    strategies: tuple[str, ...] = STRATEGIES
    full_data_lora_seeds: int = 1
    """LoRA on the whole pool is the costliest fit: done for the first N seeds of a prevalence."""

    def __post_init__(self) -> None:
        for p in self.prevalences:
            if not 0.0 < p < 1.0:
                raise EfficiencyError(f"prevalence {p!r} must lie strictly between 0 and 1")
        if self.seeds < 1:
            raise EfficiencyError(f"seeds must be >= 1, got {self.seeds}")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise EfficiencyError(f"unknown strategy {unknown[0]!r}: use one of {STRATEGIES}")
        if "random" not in self.strategies:
            raise EfficiencyError("the random strategy is the baseline: it cannot be left out")
        if self.seed_positives < 1 or self.seed_labels <= self.seed_positives:
            raise EfficiencyError(
                f"seed labels ({self.seed_labels}) must exceed seed positives "
                f"({self.seed_positives}) and both be >= 1"
            )
        if self.rounds_per_checkpoint < 1 or self.tail_factor < 2:
            raise EfficiencyError("rounds_per_checkpoint must be >= 1 and tail_factor >= 2")
        if list(self.checkpoints) != sorted(set(self.checkpoints)) or not self.checkpoints:
            raise EfficiencyError(f"checkpoints {self.checkpoints} must be distinct and ascending")
        if self.checkpoints[0] <= self.seed_labels:
            raise EfficiencyError(
                f"the first checkpoint ({self.checkpoints[0]}) must exceed the seed labels "
                f"({self.seed_labels})"
            )

    @property
    def seed_list(self) -> list[int]:
        return [self.first_seed + k for k in range(self.seeds)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "prevalences": list(self.prevalences),
            "seeds": self.seed_list,
            "checkpoints": list(self.checkpoints),
            "rounds_per_checkpoint": self.rounds_per_checkpoint,
            "seed_labels": self.seed_labels,
            "seed_positives": self.seed_positives,
            "test_positives": self.test_positives,
            "test_negatives": self.test_negatives,
            "pool_size": self.pool_size,
            "tail_factor": self.tail_factor,
            "strategies": list(self.strategies),
            "full_data_lora_seeds": self.full_data_lora_seeds,
        }


QUICK = BenchConfig(
    prevalences=(0.05,),
    seeds=1,
    checkpoints=(20, 40),
    rounds_per_checkpoint=1,
    test_positives=10,
    test_negatives=40,
    pool_size=200,
)
"""Tiny sizes for tests and a first look: one seed, checkpoints 20/40, a pool of 200."""


# --- test set and pool ----------------------------------------------------------------------------


def _labels(y: np.ndarray) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or not np.isin(arr, (0, 1)).all():
        raise EfficiencyError("labels must be a 1-d array of 0 (benign) and 1 (violating)")
    return arr.astype(np.int64)


def draw_test(y: np.ndarray, *, positives: int, negatives: int, seed: int) -> np.ndarray:
    """Indices of the held-out test set: `positives` violating and `negatives` benign items,
    drawn without replacement, sorted. Raises when the data have too few of either.

    >>> draw_test(np.array([0, 1, 0, 1, 0, 1]), positives=2, negatives=1, seed=0).size
    3
    """
    labels = _labels(y)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if positives < 1 or negatives < 1:
        raise EfficiencyError(f"test set sizes must be >= 1, got {positives} and {negatives}")
    if pos.size < positives + 1:
        raise EfficiencyError(
            f"the data have {pos.size} violating items: the test set needs {positives} and the "
            f"pool at least one more"
        )
    if neg.size < negatives + 1:
        raise EfficiencyError(
            f"the data have {neg.size} benign items: the test set needs {negatives} and the pool "
            f"at least one more"
        )
    rng = _rng(seed, _TEST)
    picked = np.concatenate(
        [rng.choice(pos, positives, replace=False), rng.choice(neg, negatives, replace=False)]
    )
    return np.sort(picked)


def draw_pool(
    y: np.ndarray,
    *,
    prevalence: float,
    seed: int,
    exclude: np.ndarray,
    size: int | None = None,
    min_positives: int = 1,
) -> np.ndarray:
    """Indices of a pool whose violating share is `prevalence` (rounded to whole items), outside
    `exclude`, sorted. It takes every available benign item (at most ``size * (1 - P)``) and as
    many violating items as the share asks; when violating items run short, it takes fewer benign
    ones instead, so the share holds."""
    labels = _labels(y)
    if not 0.0 < prevalence < 1.0:
        raise EfficiencyError(f"prevalence {prevalence!r} must lie strictly between 0 and 1")
    free = np.ones(labels.size, dtype=bool)
    free[np.asarray(exclude, dtype=np.int64)] = False
    pos, neg = np.flatnonzero(free & (labels == 1)), np.flatnonzero(free & (labels == 0))
    n_neg = neg.size if size is None else min(neg.size, round(size * (1.0 - prevalence)))
    n_pos = round(n_neg * prevalence / (1.0 - prevalence))
    if n_pos > pos.size:
        n_pos = pos.size
        n_neg = min(neg.size, math.floor(n_pos * (1.0 - prevalence) / prevalence))
    if n_pos < min_positives or n_neg < 1:
        raise EfficiencyError(
            f"a pool at prevalence {prevalence} would hold {n_pos} violating and {n_neg} benign "
            f"items (need at least {min_positives} violating): the data are too small"
        )
    rng = _rng(seed, _POOL, prevalence)
    picked = np.concatenate(
        [rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]
    )
    return np.sort(picked)


def prevalence_weights(y_test: np.ndarray, prevalence: float) -> np.ndarray:
    """Sample weights that give the test set's violating items the share `prevalence` of the
    total weight, scaled so the weights average 1.

    >>> w = prevalence_weights(np.array([1, 1, 0, 0, 0, 0]), 0.1)
    >>> round(float(w[:2].sum() / w.sum()), 6)
    0.1
    """
    labels = _labels(y_test)
    n_pos, n_neg = int(labels.sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise EfficiencyError("the test set needs both violating and benign items")
    w = np.where(labels == 1, prevalence / n_pos, (1.0 - prevalence) / n_neg)
    return np.asarray(w * labels.size, dtype=np.float64)


def seed_labels(
    y_pool: np.ndarray, *, count: int, positives: int, seed: int, prevalence: float
) -> np.ndarray:
    """Positions in the pool of the seed labels (see the module's notes), in draw order."""
    labels = _labels(y_pool)
    if labels.sum() < positives or (labels == 0).sum() < count - positives:
        raise EfficiencyError(
            f"the pool has {int(labels.sum())} violating items: the seed labels need {positives}"
        )
    rng = _rng(seed, _SEED_LABELS, prevalence)
    chosen = rng.choice(labels.size, count, replace=False)
    short = positives - int(labels[chosen].sum())
    if short > 0:
        spare = np.setdiff1d(np.flatnonzero(labels == 1), chosen)
        extra = rng.choice(spare, short, replace=False)
        benign_slots = np.flatnonzero(labels[chosen] == 0)[-short:]
        chosen[benign_slots] = extra
    return np.asarray(chosen, dtype=np.int64)


@dataclass(frozen=True)
class Split:
    """One seed's test set and one prevalence's pool, as indices into the data set."""

    prevalence: float
    seed: int
    test: np.ndarray
    pool: np.ndarray
    weights: np.ndarray
    initial: np.ndarray  # positions in `pool` of the seed labels

    def describe(self, y: np.ndarray) -> dict[str, Any]:
        pool_pos = int(y[self.pool].sum())
        return {
            "seed": self.seed,
            "pool_size": int(self.pool.size),
            "pool_violating": pool_pos,
            "pool_prevalence": round(pool_pos / self.pool.size, 5),
            "test_size": int(self.test.size),
            "test_violating": int(y[self.test].sum()),
            "seed_labels": int(self.initial.size),
            "seed_labels_violating": int(y[self.pool[self.initial]].sum()),
            "rng": f"numpy default_rng([{self.seed}, stream, round(P * 1e6), round])",
        }


def make_split(
    y: np.ndarray, test: np.ndarray, prevalence: float, seed: int, config: BenchConfig
) -> Split:
    pool = draw_pool(
        y,
        prevalence=prevalence,
        seed=seed,
        exclude=test,
        size=config.pool_size,
        min_positives=config.seed_positives + 1,
    )
    if pool.size < config.checkpoints[-1] + 1:
        raise EfficiencyError(
            f"the pool at prevalence {prevalence} holds {pool.size} items, fewer than the last "
            f"checkpoint ({config.checkpoints[-1]}) plus one"
        )
    initial = seed_labels(
        y[pool],
        count=config.seed_labels,
        positives=config.seed_positives,
        seed=seed,
        prevalence=prevalence,
    )
    return Split(prevalence, seed, test, pool, prevalence_weights(y[test], prevalence), initial)


def check_feasible(y: np.ndarray, config: BenchConfig) -> None:
    """Draw every test set and pool the configuration asks for, raising the first that the data
    cannot supply: cheap, so a run fails before any embedding or training."""
    labels = _labels(y)
    for seed in config.seed_list:
        test = draw_test(
            labels, positives=config.test_positives, negatives=config.test_negatives, seed=seed
        )
        for prevalence in config.prevalences:
            make_split(labels, test, prevalence, seed, config)


# --- the selection model and the strategies -------------------------------------------------------

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
    return int(_rng(seed, _SELECT, prevalence, step).integers(0, 2**31 - 1))


# --- evaluated models -----------------------------------------------------------------------------

TrainFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
"""train_and_decide(train_rows, test_rows, seed) -> 0/1 decisions on test_rows; rows index the
data set. The benchmark passes the product's LoRA fine-tune; tests pass the frozen head."""


def frozen_head(embeddings: np.ndarray, y: np.ndarray, head: Head = logistic_head) -> TrainFn:
    """A TrainFn that fits `head` on the frozen embeddings and decides at p >= 0.5."""

    def train_and_decide(train_rows: np.ndarray, test_rows: np.ndarray, seed: int) -> np.ndarray:
        score = head(embeddings[train_rows], y[train_rows], seed)
        return (score(embeddings[test_rows]) >= 0.5).astype(np.int64)

    return train_and_decide


def lora_epochs(examples: int, target_examples: int = 800, max_epochs: int = 8) -> int:
    """Epochs for a fine-tune on `examples` labels: about `target_examples` examples seen, at
    least one epoch and at most `max_epochs` (a fixed compute per checkpoint, so a small set gets
    several passes and the whole pool one).

    >>> [lora_epochs(n) for n in (50, 100, 200, 400, 4000)]
    [8, 8, 4, 2, 1]
    """
    if examples < 1:
        raise EfficiencyError(f"cannot train on {examples} examples")
    return max(1, min(max_epochs, round(target_examples / examples)))


# --- curves ---------------------------------------------------------------------------------------


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    defined = [v for v in values if v is not None]
    if not defined:
        return {"kappa": None, "spread": None}
    arr = np.asarray(defined, dtype=np.float64)
    return {
        "kappa": round(float(arr.mean()), 4),
        "spread": {
            "std": round(float(arr.std(ddof=1)) if arr.size > 1 else 0.0, 4),
            "min": round(float(arr.min()), 4),
            "max": round(float(arr.max()), 4),
            "undefined": len(values) - len(defined),
        },
    }


def aggregate(
    per_seed: Mapping[int, Mapping[int, float | None]], source: Mapping[int, str] | str
) -> list[dict[str, Any]]:
    """Curve points from {seed: {labels: kappa}}: mean and spread over seeds, per label count."""
    counts = sorted({n for points in per_seed.values() for n in points})
    out = []
    for n in counts:
        values = [points.get(n) for points in per_seed.values() if n in points]
        kind = source if isinstance(source, str) else source[n]
        out.append(
            {
                "labels": n,
                **_spread(values),
                "per_seed": [None if v is None else round(v, 4) for v in values],
                "kappa_source": kind,
            }
        )
    return out


def labels_to_target(
    curve: Sequence[Mapping[str, Any]],
    references: Mapping[str, float | None],
    share: float = TARGET_SHARE,
) -> int | None:
    """Fewest labels whose mean kappa reaches `share` of the reference of the same kappa source;
    None when no point does or the reference is undefined or not positive.

    >>> curve = [{"labels": 50, "kappa": 0.5, "kappa_source": "lora"},
    ...          {"labels": 100, "kappa": 0.9, "kappa_source": "lora"}]
    >>> labels_to_target(curve, {"lora": 0.92}), labels_to_target(curve, {"lora": None})
    (100, None)
    """
    for point in sorted(curve, key=lambda pt: pt["labels"]):
        ref = references.get(point["kappa_source"])
        k = point.get("kappa")
        if ref is None or ref <= 0.0 or k is None:
            continue
        if k >= share * ref:
            return int(point["labels"])
    return None


def multiplier(to_target: Mapping[str, int | None], baseline: str = "random") -> float | None:
    """The baseline's labels to target over the best curated strategy's; None when either is
    undefined.

    >>> multiplier({"random": 3200, "uncertainty": 100, "boundary": 200})
    32.0
    >>> multiplier({"random": None, "uncertainty": 100}) is None
    True
    """
    base = to_target.get(baseline)
    curated = [n for s, n in to_target.items() if s != baseline and n is not None]
    if base is None or not curated:
        return None
    return round(base / min(curated), 2)


# --- the whole benchmark --------------------------------------------------------------------------


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
    labels = _labels(y)
    if embeddings.shape[0] != labels.size:
        raise EfficiencyError(f"{embeddings.shape[0]} embeddings for {labels.size} labels")
    frozen = frozen_head(embeddings, labels, head)
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
        for k, seed in enumerate(config.seed_list):
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
                    if n in config.checkpoints:
                        log(f"P={prevalence} seed={seed} {strategy}: {evaluate_source} at {n}")
                        main[strategy][seed][n] = _kappa(
                            y_test, evaluate(rows, split.test, seed), split.weights
                        )
                    else:
                        main[strategy][seed][n] = cheap[strategy][seed][n]
            full_cheap[seed] = _kappa(y_test, frozen(split.pool, split.test, seed), split.weights)
            if k < config.full_data_lora_seeds:
                log(f"P={prevalence} seed={seed}: {evaluate_source} on all {split.pool.size}")
                full_main[seed] = _kappa(
                    y_test, evaluate(split.pool, split.test, seed), split.weights
                )
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
    checkpoints = set(config.checkpoints)

    def sources(per_seed: Mapping[int, Mapping[int, float | None]]) -> dict[int, str]:
        counts = {n for points in per_seed.values() for n in points}
        return {n: source if n in checkpoints else FROZEN for n in counts}

    curves = {s: aggregate(main[s], sources(main[s])) for s in config.strategies}
    curves_cheap = {s: aggregate(cheap[s], FROZEN) for s in config.strategies}
    full = _spread(list(full_main.values()))
    full_f = _spread(list(full_cheap.values()))
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
                "per_seed": [_round(v) for v in full_main.values()],
                "seeds": list(full_main),
            },
            FROZEN: {
                **full_f,
                "per_seed": [_round(v) for v in full_cheap.values()],
                "seeds": list(full_cheap),
            },
        },
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


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
