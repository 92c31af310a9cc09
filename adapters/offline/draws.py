"""The label-efficiency benchmark's configuration and its random draws: test sets, pools at a chosen
prevalence, seed labels; every draw has its own generator seeded from (seed, tag, prevalence)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import BorderlineError

__all__ = [
    "DEFAULT_CHECKPOINTS",
    "DEFAULT_PREVALENCES",
    "QUICK",
    "STRATEGIES",
    "BenchConfig",
    "EfficiencyError",
    "Split",
    "check_feasible",
    "draw_pool",
    "draw_test",
    "make_split",
    "prevalence_weights",
    "seed_labels",
]


STRATEGIES = ("boundary", "uncertainty", "uncertainty+diversity", "random")


DEFAULT_PREVALENCES = (0.01, 0.05)


DEFAULT_CHECKPOINTS = (50, 100, 200, 400)


MIN_TEST_POSITIVES = 50


# Stream tags: every draw gets its own generator, seeded with [seed, tag, prevalence in ppm].
TAG_TEST, TAG_POOL, TAG_SEED_LABELS, TAG_SELECT = 0, 1, 2, 3


class EfficiencyError(BorderlineError):
    """The benchmark cannot run on this data or with these settings; the message says which
    number is short."""


def stream_rng(seed: int, tag: int, prevalence: float = 0.0, step: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, tag, round(prevalence * 1_000_000), step])


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
    tail_factor: int = 4
    """Random's steps after the last checkpoint: x4 up to the whole pool (400 -> 1,600 -> pool),
    LoRA at each; x2 costs two more fine-tunes of 400+ steps per seed."""
    strategies: tuple[str, ...] = STRATEGIES

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


def binary_labels(y: np.ndarray) -> np.ndarray:
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
    labels = binary_labels(y)
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
    rng = stream_rng(seed, TAG_TEST)
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
    labels = binary_labels(y)
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
    rng = stream_rng(seed, TAG_POOL, prevalence)
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
    labels = binary_labels(y_test)
    n_pos, n_neg = int(labels.sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise EfficiencyError("the test set needs both violating and benign items")
    w = np.where(labels == 1, prevalence / n_pos, (1.0 - prevalence) / n_neg)
    return np.asarray(w * labels.size, dtype=np.float64)


def seed_labels(
    y_pool: np.ndarray, *, count: int, positives: int, seed: int, prevalence: float
) -> np.ndarray:
    """Positions in the pool of the seed labels (see the module's notes), in draw order."""
    labels = binary_labels(y_pool)
    if labels.sum() < positives or (labels == 0).sum() < count - positives:
        raise EfficiencyError(
            f"the pool has {int(labels.sum())} violating items: the seed labels need {positives}"
        )
    rng = stream_rng(seed, TAG_SEED_LABELS, prevalence)
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
    labels = binary_labels(y)
    for seed in config.seed_list:
        test = draw_test(
            labels, positives=config.test_positives, negatives=config.test_negatives, seed=seed
        )
        for prevalence in config.prevalences:
            make_split(labels, test, prevalence, seed, config)
