"""Evidence shown with a review request: the nearest labelled neighbours of an item, and the live
items nearest a policy's examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from adapters.review.selectors import (
    Candidate,
    CurationError,
    Reason,
    checked_probabilities,
    unit_rows,
)

__all__ = ["Evidence", "near_examples", "nearest_labelled"]


@dataclass(frozen=True)
class Evidence:
    """A labelled item shown next to a review request: its label and its cosine similarity."""

    item_id: str
    label: str
    similarity: float


def nearest_labelled(
    query: np.ndarray,
    labelled_ids: Sequence[str],
    labelled_embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    k: int = 3,
) -> list[list[Evidence]]:
    """For each query row, the `k` most similar labelled items by cosine similarity, most similar
    first; empty rows when nothing is labelled yet.

    >>> lab = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> labels = ["ok", "bad", "ok"]
    >>> rows = nearest_labelled(np.array([[0.0, 2.0]]), ["x", "y", "z"], lab, labels, k=2)
    >>> [(e.item_id, e.label, round(e.similarity, 2)) for e in rows[0]]
    [('y', 'bad', 1.0), ('z', 'ok', 0.8)]
    """
    if k < 1:
        raise CurationError(f"k must be >= 1, got {k!r}")
    q = np.asarray(query, dtype=np.float64)
    if q.ndim != 2:
        raise CurationError(f"query has shape {q.shape}, expected (rows, dim)")
    if len(labels) != len(labelled_ids):
        raise CurationError(f"{len(labels)} labels for {len(labelled_ids)} labelled ids")
    if not labelled_ids:
        return [[] for _ in range(q.shape[0])]
    lab = np.asarray(labelled_embeddings, dtype=np.float64)
    if lab.shape != (len(labelled_ids), q.shape[1]):
        raise CurationError(
            f"labelled_embeddings have shape {lab.shape}, expected ({len(labelled_ids)}, "
            f"{q.shape[1]})"
        )
    if q.shape[0] == 0:
        return []
    index = NearestNeighbors(metric="cosine", algorithm="brute").fit(lab)
    distances, rows = index.kneighbors(q, n_neighbors=min(k, len(labelled_ids)))
    return [
        [
            Evidence(labelled_ids[r], labels[r], float(np.clip(1.0 - d, -1.0, 1.0)))
            for d, r in zip(row_d, row_r, strict=True)
        ]
        for row_d, row_r in zip(distances, rows, strict=True)
    ]


def near_examples(
    item_ids: Sequence[str],
    embeddings: np.ndarray,
    p_violating: np.ndarray,
    examples: np.ndarray,
    *,
    budget: int,
    min_similarity: float = 0.5,
) -> list[Candidate]:
    """After a policy change: the items most similar (cosine) to the policy's examples of what
    changed, at least ``min_similarity``, most similar first; at most ``budget``. These are often
    items the old model calls benign with confidence, which no uncertainty measure would pick.

    >>> e = np.eye(3, dtype=np.float32)
    >>> [c.item_id for c in near_examples(["a", "b", "c"], e, np.array([0.1, 0.2, 0.9]),
    ...                                   e[[1]], budget=2)]
    ['b']
    """
    n = len(item_ids)
    if n == 0 or budget <= 0 or len(examples) == 0:
        return []
    rows = unit_rows(embeddings, n)
    ex = np.asarray(examples, dtype=np.float64)
    ex = ex / np.clip(np.linalg.norm(ex, axis=1, keepdims=True), 1e-12, None)
    similarity = (rows @ ex.T).max(axis=1)
    p = checked_probabilities(p_violating, n)
    order = np.argsort(-similarity, kind="stable")
    out = []
    for i in order[:budget]:
        if similarity[i] < min_similarity:
            break
        out.append(
            Candidate(
                item_ids[i], Reason.POLICY_CHANGE, float(np.clip(similarity[i], 0, 1)), float(p[i])
            )
        )
    return out
