"""Unit tests for adapters.curation: the uncertainty band, boundary pairs (cross-label, from the
overlap, diverse under a tight budget, deterministic, degenerate inputs decided on purpose), the
audit sample and the baselines, the stream window, labelled evidence, the review budget and the
merge of candidates. Synthetic data: two Gaussian blobs on the unit sphere that overlap."""

from __future__ import annotations

import ast
import doctest
import warnings
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

import adapters.review.budget
import adapters.review.evidence
import adapters.review.selectors
import adapters.review.window
from adapters.review.budget import ReviewBudget, prioritise
from adapters.review.evidence import Evidence, nearest_labelled
from adapters.review.selectors import (
    Candidate,
    CurationError,
    Reason,
    top_uncertain,
    uncertain,
    uncertainty_diversity,
    uncertainty_scores,
)
from adapters.review.window import CurationWindow, audit_sample, boundary_pairs, random_sample


@cache
def _blobs(
    n: int = 400, dim: int = 8, seed: int = 0
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Two overlapping blobs on the unit sphere (30% violating). The model's probability is a noisy
    logistic of the position along the axis between the blob centres: its predicted labels mix
    where the blobs meet, as a confused model's do."""
    rng = np.random.default_rng(seed)
    benign, violating = np.zeros(dim), np.zeros(dim)
    benign[0] = 1.0
    violating[0], violating[1] = np.cos(1.0), np.sin(1.0)
    n_violating = int(0.3 * n)
    centres = np.vstack(
        [np.tile(violating, (n_violating, 1)), np.tile(benign, (n - n_violating, 1))]
    )
    x = centres + 0.2 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    z = 8.0 * (x @ (violating - benign)) + rng.normal(size=n)
    p = 1.0 / (1.0 + np.exp(-z))
    return tuple(f"ad-{i}" for i in range(n)), x, p


def _rows(ids: tuple[str, ...], candidates: list[Candidate]) -> list[int]:
    index = {item_id: i for i, item_id in enumerate(ids)}
    return [index[c.item_id] for c in candidates]


def _pairs(candidates: list[Candidate]) -> list[tuple[Candidate, Candidate]]:
    return [(candidates[k], candidates[k + 1]) for k in range(0, len(candidates), 2)]


def _mean_spread(points: np.ndarray) -> float:
    return float(pdist(points).mean())


def test_doctest() -> None:
    results = [
        doctest.testmod(m)
        for m in (
            adapters.review.selectors,
            adapters.review.window,
            adapters.review.budget,
            adapters.review.evidence,
        )
    ]
    assert sum(r.attempted for r in results) > 0
    assert sum(r.failed for r in results) == 0


def test_module_never_imports_kafka_or_torch() -> None:
    modules = (
        adapters.review.selectors,
        adapters.review.window,
        adapters.review.budget,
        adapters.review.evidence,
    )
    trees = [ast.parse(Path(str(m.__file__)).read_text(encoding="utf-8")) for m in modules]
    imported = {
        alias.name.split(".")[0]
        for tree in trees
        for n in ast.walk(tree)
        if isinstance(n, ast.Import)
        for alias in n.names
    }
    imported |= {
        n.module.split(".")[0]
        for tree in trees
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module
    }
    assert imported.isdisjoint({"faust", "aiokafka", "mode", "streams", "torch", "transformers"})


# --- uncertainty ----------------------------------------------------------------------------------


def test_uncertain_band_edges_are_inclusive() -> None:
    p = np.array([0.24, 0.25, 0.5, 0.75, 0.76])  # exact in binary: the two edges tie
    found = uncertain(list("abcde"), p, low=0.25, high=0.75)
    assert [c.item_id for c in found] == ["c", "b", "d"]  # least sure first, ties in input order
    assert [c.priority for c in found] == [1.0, 0.5, 0.5]
    assert {c.reason for c in found} == {Reason.UNCERTAIN}
    assert [c.p_violating for c in found] == [0.5, 0.25, 0.75]


def test_uncertain_band_of_one_point_and_bad_bands() -> None:
    assert [c.item_id for c in uncertain(["a", "b"], np.array([0.5, 0.6]), low=0.5, high=0.5)] == [
        "a"
    ]
    with pytest.raises(CurationError, match="band"):
        uncertain(["a"], np.array([0.5]), low=0.7, high=0.3)
    with pytest.raises(CurationError, match=r"1\.2"):
        uncertain(["a"], np.array([1.2]), low=0.3, high=0.7)
    with pytest.raises(CurationError, match="shape"):
        uncertain(["a", "b"], np.array([0.5]), low=0.3, high=0.7)


def test_uncertainty_scores() -> None:
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    assert uncertainty_scores(p).tolist() == pytest.approx([0.0, 0.2, 1.0, 0.2, 0.0])
    entropy = uncertainty_scores(p, "entropy")
    h = -(0.1 * np.log2(0.1) + 0.9 * np.log2(0.9))
    assert entropy.tolist() == pytest.approx([0.0, h, 1.0, h, 0.0])
    with pytest.raises(CurationError, match="gini"):
        uncertainty_scores(p, "gini")  # type: ignore[arg-type]


def test_top_uncertain_takes_the_least_sure_first() -> None:
    p = np.array([0.9, 0.45, 0.55, 0.5, 0.05])
    assert [c.item_id for c in top_uncertain(list("abcde"), p, budget=3)] == ["d", "b", "c"]
    assert len(top_uncertain(list("abcde"), p, budget=50)) == 5
    assert top_uncertain(list("abcde"), p, budget=0) == []


# --- boundary pairs -------------------------------------------------------------------------------


def test_boundary_pairs_are_cross_label_and_point_at_each_other() -> None:
    ids, x, p = _blobs()
    found = boundary_pairs(ids, x, p, max_pairs=8, seed=0)
    assert len(found) == 16
    for v, b in _pairs(found):
        assert v.reason is Reason.BOUNDARY and b.reason is Reason.BOUNDARY
        assert v.p_violating >= 0.5 > b.p_violating
        assert (v.pair_item_id, b.pair_item_id) == (b.item_id, v.item_id)
        distance = float(np.linalg.norm(x[ids.index(v.item_id)] - x[ids.index(b.item_id)]))
        assert v.priority == b.priority == pytest.approx(1.0 - distance / 2.0)


def test_boundary_pairs_come_from_the_overlap() -> None:
    ids, x, p = _blobs()
    chosen = _rows(ids, boundary_pairs(ids, x, p, max_pairs=5, seed=0))
    # the blobs meet, and the predicted labels mix, at the plane x . (c_violating - c_benign) = 0
    to_plane = np.abs(x[:, 0] * (np.cos(1.0) - 1.0) + x[:, 1] * np.sin(1.0))
    assert to_plane[chosen].mean() < 0.65 * to_plane.mean()
    flagged = p >= 0.5
    to_other_class = np.where(flagged[:, None] != flagged[None, :], cdist(x, x), np.inf).min(axis=1)
    random_rows = np.random.default_rng(1).choice(len(ids), size=len(chosen), replace=False)
    assert to_other_class[chosen].mean() < 0.85 * to_other_class[random_rows].mean()
    assert to_other_class[chosen].mean() < 0.85 * to_other_class.mean()


@pytest.mark.parametrize("max_pairs", [1, 3, 20])
def test_boundary_pairs_respect_the_budget_and_use_each_item_once(max_pairs: int) -> None:
    ids, x, p = _blobs()
    found = boundary_pairs(ids, x, p, max_pairs=max_pairs, seed=0)
    assert len(found) == 2 * max_pairs
    assert len({c.item_id for c in found}) == len(found)


def test_boundary_pairs_are_deterministic_for_a_seed() -> None:
    ids, x, p = _blobs()
    assert boundary_pairs(ids, x, p, max_pairs=6, seed=3) == boundary_pairs(
        ids, x, p, max_pairs=6, seed=3
    )


def test_boundary_pairs_are_more_spread_than_the_closest_pairs() -> None:
    ids, x, p = _blobs()
    budget = 5
    found = boundary_pairs(ids, x, p, max_pairs=budget, seed=0)
    midpoints = np.array(
        [(x[ids.index(v.item_id)] + x[ids.index(b.item_id)]) / 2 for v, b in _pairs(found)]
    )
    # the `budget` closest cross-label pairs, each item once, by brute force
    flagged = p >= 0.5
    d = np.where(flagged[:, None] & ~flagged[None, :], cdist(x, x), np.inf)
    used: set[int] = set()
    closest: list[np.ndarray] = []
    for flat in np.argsort(d, axis=None):
        r, c = np.unravel_index(flat, d.shape)
        if r in used or c in used:
            continue
        used |= {int(r), int(c)}
        closest.append((x[r] + x[c]) / 2)
        if len(closest) == budget:
            break
    assert _mean_spread(midpoints) > 1.1 * _mean_spread(np.array(closest))
    # the first pick is the closest pair of all
    assert found[0].priority == pytest.approx(1.0 - d.min() / 2.0)


def test_boundary_pairs_ignore_the_scale_of_embeddings() -> None:
    ids, x, p = _blobs()
    scaled = boundary_pairs(ids, 3.0 * x, p, max_pairs=4)
    found = boundary_pairs(ids, x, p, max_pairs=4)
    assert [(c.item_id, c.pair_item_id) for c in scaled] == [
        (c.item_id, c.pair_item_id) for c in found
    ]
    assert [c.priority for c in scaled] == pytest.approx([c.priority for c in found])


def test_boundary_pairs_follow_the_threshold() -> None:
    ids, x, p = _blobs()
    for v, b in _pairs(boundary_pairs(ids, x, p, threshold=0.9, max_pairs=5)):
        assert v.p_violating >= 0.9 > b.p_violating


def test_boundary_pairs_with_explicit_clusters_per_class() -> None:
    ids, x, p = _blobs(n=60)
    for k in (1, 4):
        assert len(boundary_pairs(ids, x, p, max_pairs=3, clusters_per_class=k)) == 6
    # more clusters than items: capped at half the items of each side, so clusters keep a radius
    assert boundary_pairs(ids, x, p, max_pairs=3, clusters_per_class=1000) == boundary_pairs(
        ids, x, p, max_pairs=3, clusters_per_class=30
    )
    with pytest.raises(CurationError, match="clusters_per_class"):
        boundary_pairs(ids, x, p, max_pairs=3, clusters_per_class=0)


def test_degenerate_one_class_no_budget_no_items() -> None:
    ids, x, p = _blobs(n=50)
    assert boundary_pairs(ids, x, np.full(50, 0.1), max_pairs=5) == []
    assert boundary_pairs(ids, x, np.full(50, 0.9), max_pairs=5) == []
    assert boundary_pairs(ids, x, p, max_pairs=0) == []
    assert boundary_pairs([], np.zeros((0, 8)), np.zeros(0), max_pairs=5) == []
    with pytest.raises(CurationError, match="max_pairs"):
        boundary_pairs(ids, x, p, max_pairs=-1)


def test_a_lone_item_inside_the_other_class_is_a_boundary_case() -> None:
    ids, x, _ = _blobs(n=50)
    x = x.copy()
    x[45] = x[15:].mean(axis=0) / np.linalg.norm(x[15:].mean(axis=0))  # amid the benign blob
    p = np.full(50, 0.1)
    p[45] = 0.8  # the one violating item
    found = boundary_pairs(ids, x, p, max_pairs=5)
    nearest = int(np.argmin(np.where(p < 0.5, np.linalg.norm(x - x[45], axis=1), np.inf)))
    assert [(c.item_id, c.pair_item_id) for c in found] == [
        ("ad-45", ids[nearest]),
        (ids[nearest], "ad-45"),
    ]


def test_a_lone_item_far_from_the_other_class_is_not() -> None:
    x = np.array([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.99, -0.1, 0.0], [-1.0, 0.0, 0.0]])
    p = np.array([0.1, 0.2, 0.3, 0.9])
    assert boundary_pairs(list("abcd"), x, p, max_pairs=3) == []


def test_identical_embeddings_pair_everything_without_warnings() -> None:
    x = np.tile([[0.6, 0.8, 0.0]], (7, 1))
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = boundary_pairs(list("abcdefg"), x, p, max_pairs=10)
    assert len(found) == 6  # three violating items, each paired once
    assert {c.priority for c in found} == {1.0}
    assert {c.item_id for c in found} >= {"e", "f", "g"}


def test_repeated_item_ids_are_paired_once() -> None:
    x = np.array([[1.0, 0.0], [0.95, 0.1], [0.9, 0.2], [0.95, 0.1]])  # "b" sits between a and c
    p = np.array([0.2, 0.8, 0.3, 0.8])
    found = boundary_pairs(["a", "b", "c", "b"], x, p, max_pairs=5)
    assert [c.item_id for c in found].count("b") == 1
    assert len(found) == 2


def test_bad_embeddings_are_refused() -> None:
    with pytest.raises(CurationError, match="shape"):
        boundary_pairs(["a", "b"], np.ones((3, 2)), np.array([0.1, 0.9]), max_pairs=1)
    with pytest.raises(CurationError, match="row 1"):
        boundary_pairs(
            ["a", "b"], np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([0.1, 0.9]), max_pairs=1
        )
    with pytest.raises(CurationError, match="NaN"):
        boundary_pairs(
            ["a", "b"], np.array([[1.0, np.nan], [0.0, 1.0]]), np.array([0.1, 0.9]), max_pairs=1
        )


# --- audit and random -----------------------------------------------------------------------------


def test_audit_sample_size_and_determinism() -> None:
    ids = [f"ad-{i}" for i in range(200)]
    p = np.linspace(0.0, 1.0, 200)
    sample = audit_sample(ids, p, rate=0.05, seed=7)
    assert len(sample) == 10
    assert len({c.item_id for c in sample}) == 10
    assert {(c.reason, c.priority) for c in sample} == {(Reason.AUDIT, 0.1)}
    assert sample == audit_sample(ids, p, rate=0.05, seed=7)
    assert sample != audit_sample(ids, p, rate=0.05, seed=8)
    assert len(audit_sample(ids, p, rate=0.001, seed=7)) == 1  # at least one when rate > 0
    assert audit_sample(ids, p, rate=0.0, seed=7) == []
    assert len(audit_sample(ids, p, rate=1.0, seed=7)) == 200
    assert audit_sample([], np.zeros(0), rate=0.5, seed=7) == []
    with pytest.raises(CurationError, match="rate"):
        audit_sample(ids, p, rate=1.5, seed=7)


def test_audit_sample_is_uniform() -> None:
    ids = [str(i) for i in range(20)]
    p = np.r_[np.full(10, 0.01), np.full(10, 0.99)]  # what the model thinks must not matter
    counts = Counter(c.item_id for s in range(200) for c in audit_sample(ids, p, rate=0.25, seed=s))
    assert sum(counts.values()) == 1000
    assert min(counts[i] for i in ids) > 25 and max(counts.values()) < 75  # expected 50 each


def test_random_sample() -> None:
    ids = list("abcdefgh")
    p = np.full(8, 0.3)
    drawn = random_sample(ids, p, budget=3, seed=0)
    assert len(drawn) == 3 and drawn == random_sample(ids, p, budget=3, seed=0)
    assert {c.reason for c in drawn} == {Reason.AUDIT}
    assert [c.item_id for c in random_sample(ids, p, budget=99, seed=0)] == ids


# --- uncertainty + diversity ----------------------------------------------------------------------


def _uncertain_clump() -> tuple[list[str], np.ndarray, np.ndarray]:
    """20 near-duplicates at p = 0.5, 30 spread items at p in [0.35, 0.45], 50 sure items."""
    rng = np.random.default_rng(4)
    clump = np.array([1.0, 0.0, 0.0, 0.0]) + 0.01 * rng.normal(size=(20, 4))
    x = np.vstack([clump, rng.normal(size=(80, 4))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p = np.r_[np.full(20, 0.5), rng.uniform(0.35, 0.45, 30), rng.choice([0.02, 0.98], 50)]
    return [f"ad-{i}" for i in range(100)], x, p


def test_uncertainty_diversity_picks_spread_items_among_the_most_uncertain() -> None:
    ids, x, p = _uncertain_clump()
    picked = uncertainty_diversity(ids, x, p, budget=5, pool_factor=5)
    assert len(picked) == 5 and len({c.item_id for c in picked}) == 5
    pool = {c.item_id for c in top_uncertain(ids, p, budget=25)}
    assert {c.item_id for c in picked} <= pool
    assert picked[0].item_id == "ad-0"  # starts from the least sure
    top = top_uncertain(ids, p, budget=5)
    assert _mean_spread(x[_rows(tuple(ids), picked)]) > 3 * _mean_spread(x[_rows(tuple(ids), top)])
    assert {c.reason for c in picked} == {Reason.UNCERTAIN}


def test_uncertainty_diversity_edges() -> None:
    ids, x, p = _uncertain_clump()
    assert uncertainty_diversity(ids, x, p, budget=0) == []
    assert len(uncertainty_diversity(ids[:3], x[:3], p[:3], budget=10)) == 3
    with pytest.raises(CurationError, match="pool_factor"):
        uncertainty_diversity(ids, x, p, budget=3, pool_factor=0)


# --- the window -----------------------------------------------------------------------------------


def test_window_is_a_ring_buffer() -> None:
    w = CurationWindow(size=3, dim=2)
    assert len(w) == 0 and w.snapshot()[0] == []
    e = np.array([[1.0, 0.0], [0.0, 1.0]])
    w.add(["a", "b"], e, np.array([0.1, 0.2]))
    w.add(["c", "d"], e, np.array([0.3, 0.4]))  # "a" is the oldest: it goes
    ids, emb, p = w.snapshot()
    assert (ids, len(w)) == (["b", "c", "d"], 3)
    assert p.tolist() == pytest.approx([0.2, 0.3, 0.4])
    assert emb.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    w.add(["c"], np.array([[0.5, 0.5]]), np.array([0.9]))  # already in the window: ignored
    assert w.snapshot()[0] == ["b", "c", "d"] and w.snapshot()[2][1] == pytest.approx(0.3)
    w.add(["a"], np.array([[1.0, 0.0]]), np.array([0.5]))  # evicted before: welcome back
    assert w.snapshot()[0] == ["c", "d", "a"]


@pytest.mark.parametrize(("size", "dim"), [(0, 2), (3, 0)])
def test_window_needs_room_and_a_dimension(size: int, dim: int) -> None:
    with pytest.raises(CurationError, match=f"got size={size}, dim={dim}"):
        CurationWindow(size=size, dim=dim)


def test_window_keeps_the_newest_of_a_big_batch_and_returns_copies() -> None:
    w = CurationWindow(size=4, dim=3)
    ids = [f"ad-{i}" for i in range(10)]
    w.add(ids, np.eye(3)[np.arange(10) % 3], np.linspace(0, 1, 10))
    got, emb, p = w.snapshot()
    assert got == ids[-4:]
    emb[:] = 0.0
    p[:] = 0.0
    assert w.snapshot()[2].tolist() == pytest.approx(np.linspace(0, 1, 10)[-4:].tolist())
    with pytest.raises(CurationError, match="shape"):
        w.add(["x"], np.ones((1, 2)), np.array([0.5]))
    with pytest.raises(CurationError, match="all zeros"):
        w.add(["x"], np.zeros((1, 3)), np.array([0.5]))
    with pytest.raises(CurationError, match="probability"):
        w.add(["x"], np.ones((1, 3)), np.array([np.nan]))
    assert "x" not in w.snapshot()[0]


def test_window_mine() -> None:
    blob_ids, blob_x, blob_p = _blobs(n=200)
    order = np.random.default_rng(0).permutation(200)  # both classes arrive interleaved
    ids = [blob_ids[i] for i in order]
    w = CurationWindow(size=150, dim=blob_x.shape[1])
    w.add(ids, blob_x[order], blob_p[order])
    window_ids, window_x, window_p = w.snapshot()
    assert window_ids == ids[50:]
    mined = w.mine(max_pairs=4, audit_rate=0.05, seed=2)
    assert mined == w.mine(max_pairs=4, audit_rate=0.05, seed=2)
    boundary = [c for c in mined if c.reason is Reason.BOUNDARY]
    assert boundary == boundary_pairs(window_ids, window_x, window_p, max_pairs=4, seed=2)
    audit = [c for c in mined if c.reason is Reason.AUDIT]
    assert 1 <= len(audit) <= 8
    assert len({c.item_id for c in mined}) == len(mined)  # an audited item already paired: once
    assert set(c.item_id for c in mined) <= set(window_ids)

    excluded = {c.item_id for c in mined}
    again = w.mine(max_pairs=4, audit_rate=0.05, seed=2, exclude=excluded)
    assert len([c for c in again if c.reason is Reason.BOUNDARY]) == 8
    assert not excluded & {c.item_id for c in again}
    assert w.mine(max_pairs=0, audit_rate=0.0, seed=2) == []
    assert CurationWindow(size=5, dim=2).mine(max_pairs=3, audit_rate=0.5, seed=0) == []


# --- evidence -------------------------------------------------------------------------------------


def test_nearest_labelled_order_and_k() -> None:
    angles = np.array([0.0, 0.3, 0.6, 1.2])
    labelled = np.c_[np.cos(angles), np.sin(angles)]
    ids, labels = ["w", "x", "y", "z"], ["ok", "bad", "bad", "ok"]
    query = np.array([[np.cos(0.55), np.sin(0.55)], [2.0, 0.0]])
    rows = nearest_labelled(query, ids, labelled, labels, k=3)
    assert [[e.item_id for e in row] for row in rows] == [["y", "x", "w"], ["w", "x", "y"]]
    assert [e.similarity for e in rows[0]] == pytest.approx(np.cos([0.05, 0.25, 0.55]).tolist())
    assert isinstance(rows[0][0], Evidence)
    assert (rows[0][0].item_id, rows[0][0].label) == ("y", "bad")
    assert [len(r) for r in nearest_labelled(query, ids, labelled, labels, k=10)] == [4, 4]
    assert [len(r) for r in nearest_labelled(query, ids, labelled, labels, k=1)] == [1, 1]


def test_nearest_labelled_with_nothing_labelled_and_bad_input() -> None:
    assert nearest_labelled(np.ones((2, 3)), [], np.zeros((0, 3)), []) == [[], []]
    with pytest.raises(CurationError, match="k must"):
        nearest_labelled(np.ones((1, 2)), ["a"], np.ones((1, 2)), ["ok"], k=0)
    with pytest.raises(CurationError, match="shape"):
        nearest_labelled(np.ones((1, 2)), ["a"], np.ones((1, 3)), ["ok"])


# --- the review budget ----------------------------------------------------------------------------


def test_budget_starts_full_and_refills_over_time() -> None:
    budget = ReviewBudget(labels_per_hour=120, max_open=100)
    assert budget.capacity == 10  # five minutes' worth
    assert budget.allow(25, open_requests=0, now=0.0) == 10
    assert budget.allow(25, open_requests=0, now=29.0) == 0  # one label every 30 s
    assert budget.allow(25, open_requests=0, now=30.0) == 1
    assert budget.allow(1, open_requests=0, now=90.0) == 1  # two refilled, one wanted
    assert budget.allow(25, open_requests=0, now=90.0) == 1
    assert budget.allow(25, open_requests=0, now=10_000.0) == 10  # capped at capacity


def test_budget_capacity_is_at_least_one() -> None:
    budget = ReviewBudget(labels_per_hour=6, max_open=5)
    assert budget.capacity == 1
    assert budget.allow(5, open_requests=0, now=0.0) == 1
    assert budget.allow(5, open_requests=0, now=599.0) == 0
    assert budget.allow(5, open_requests=0, now=600.0) == 1


def test_budget_is_capped_by_open_requests() -> None:
    budget = ReviewBudget(labels_per_hour=1200, max_open=50)
    assert budget.allow(100, open_requests=45, now=0.0) == 5
    assert budget.allow(100, open_requests=50, now=0.0) == 0
    assert budget.allow(100, open_requests=80, now=0.0) == 0  # over the cap: none, not negative
    assert budget.tokens == pytest.approx(95.0)  # refused requests spend nothing


def test_budget_never_goes_negative_and_ignores_a_clock_going_back() -> None:
    budget = ReviewBudget(labels_per_hour=60, max_open=10, tokens=0.0, updated_at=100.0)
    assert budget.allow(3, open_requests=0, now=50.0) == 0
    assert budget.updated_at == 100.0
    assert budget.allow(3, open_requests=0, now=160.0) == 1
    for t in range(160, 400, 7):
        budget.allow(2, open_requests=0, now=float(t))
        assert budget.tokens >= 0.0
    assert budget.allow(0, open_requests=0, now=10_000.0) == 0


def test_budget_is_deterministic_given_now() -> None:
    def run() -> list[int]:
        budget = ReviewBudget(labels_per_hour=300, max_open=8)
        return [budget.allow(4, open_requests=t % 9, now=t * 11.0) for t in range(40)]

    assert run() == run()
    assert sum(run()) > 0


def test_budget_refuses_bad_arguments() -> None:
    with pytest.raises(CurationError, match="labels_per_hour"):
        ReviewBudget(labels_per_hour=0, max_open=5)
    with pytest.raises(CurationError, match="max_open"):
        ReviewBudget(labels_per_hour=10, max_open=-1)
    with pytest.raises(CurationError, match="tokens"):
        ReviewBudget(labels_per_hour=10, max_open=1, tokens=-1.0)
    with pytest.raises(CurationError, match="wanted"):
        ReviewBudget(labels_per_hour=10, max_open=1).allow(-1, open_requests=0, now=0.0)


def test_budget_shows_its_state() -> None:
    budget = ReviewBudget(labels_per_hour=120, max_open=7, tokens=3.0, updated_at=50.0)
    assert repr(budget) == (
        "ReviewBudget(labels_per_hour=120.0, max_open=7, tokens=3.0, updated_at=50.0)"
    )


# --- merging --------------------------------------------------------------------------------------


def test_prioritise_sorts_stably_and_keeps_the_highest_priority() -> None:
    merged = prioritise(
        [
            Candidate("a", Reason.AUDIT, 0.1, 0.2),
            Candidate("b", Reason.UNCERTAIN, 0.8, 0.4),
            Candidate("c", Reason.UNCERTAIN, 0.8, 0.6),
            Candidate("a", Reason.UNCERTAIN, 0.9, 0.2),
            Candidate("b", Reason.AUDIT, 0.1, 0.4),
        ]
    )
    assert [(c.item_id, c.priority) for c in merged] == [("a", 0.9), ("b", 0.8), ("c", 0.8)]


def test_prioritise_keeps_a_pair_together() -> None:
    v = Candidate("v", Reason.BOUNDARY, 0.8, 0.8, "b")
    b = Candidate("b", Reason.BOUNDARY, 0.6, 0.2, "v")
    merged = prioritise(
        [
            v,
            Candidate("u", Reason.UNCERTAIN, 0.75, 0.5),
            Candidate("w", Reason.UNCERTAIN, 0.72, 0.5),
            Candidate("b", Reason.AUDIT, 0.1, 0.2),
            b,
        ]
    )
    # the pair ranks at its higher priority and stays adjacent, above its lower member's rank
    assert [c.item_id for c in merged] == ["v", "b", "u", "w"]
    assert merged[1] is b  # the pair's member, not the audit duplicate


def test_prioritise_drops_a_pair_whole_when_a_member_is_taken() -> None:
    v = Candidate("v", Reason.BOUNDARY, 0.6, 0.8, "b")
    b = Candidate("b", Reason.BOUNDARY, 0.6, 0.2, "v")
    merged = prioritise([v, b, Candidate("b", Reason.UNCERTAIN, 0.9, 0.2), v, b])
    assert [(c.item_id, c.reason) for c in merged] == [("b", Reason.UNCERTAIN)]
    merged = prioritise([v, b, Candidate("b", Reason.UNCERTAIN, 0.9, 0.2), b, v])
    assert [(c.item_id, c.reason) for c in merged] == [("b", Reason.UNCERTAIN)]
    audit_v = Candidate("v", Reason.AUDIT, 0.1, 0.8)
    merged = prioritise([audit_v, v, b, Candidate("b", Reason.UNCERTAIN, 0.9, 0.2)])
    assert merged == [Candidate("b", Reason.UNCERTAIN, 0.9, 0.2), audit_v]


def test_prioritise_treats_a_lone_pair_member_as_single_and_dedupes_a_repeated_pair() -> None:
    lone = Candidate("v", Reason.BOUNDARY, 0.6, 0.8, "gone")
    assert prioritise([lone]) == [lone]
    v = Candidate("x", Reason.BOUNDARY, 0.5, 0.8, "y")
    b = Candidate("y", Reason.BOUNDARY, 0.5, 0.2, "x")
    assert prioritise([v, b, b, v]) == [v, b]
    assert prioritise([]) == []


def test_candidate_refuses_out_of_range_values() -> None:
    with pytest.raises(CurationError, match="priority"):
        Candidate("a", Reason.AUDIT, 1.5, 0.5)
    with pytest.raises(CurationError, match="p_violating"):
        Candidate("a", Reason.AUDIT, 0.5, -0.1)
