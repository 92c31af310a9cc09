"""How many expert opinions an item gets. One by default; two from the start for the audit draws
(agreement, consensus and reviewer trust need overlap between reviewers, and the audit draws are
the sample the unbiased figures use) and for a seeded overlap sample; a second one later when the
first opinion disagrees with the model's decision (outside the review band: `model_decision`;
the collector asks only under a policy that has an adapter promoted for it) or comes from a
reviewer with little history. So the panel spends about 1.4 labels per item
instead of two or more on every request.

>>> first_opinions("item-7", audit_drawn=True, overlap_rate=0.0, seed=0)
2
>>> first_opinions("item-7", audit_drawn=False, overlap_rate=0.0, seed=0)
1
>>> second_opinion_why({"ann": "violating"}, model_label="benign", history={"ann": 50})
'model'
>>> second_opinion_why({"ann": "benign"}, model_label="benign", history={"ann": 50}) is None
True"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Mapping

from adapters.review.routing import Action, RoutingPolicy, route

__all__ = [
    "MIN_HISTORY",
    "OVERLAP_RATE",
    "first_opinions",
    "in_overlap_sample",
    "labels_per_item",
    "model_decision",
    "second_opinion_why",
]


OVERLAP_RATE = 0.1
"""Share of the non-audit requests that get two opinions from the start (a seeded sample)."""


MIN_HISTORY = 20
"""A reviewer with fewer labels than this is new: their single opinion is checked by another."""


def in_overlap_sample(item_id: str, *, rate: float, seed: int) -> bool:
    """Whether ``item_id`` is in the seeded overlap sample: sha256(seed, item id) as a uniform
    number below ``rate`` (the same answer for a redelivered request).

    >>> sum(in_overlap_sample(str(i), rate=0.1, seed=1) for i in range(1000)) in range(80, 121)
    True
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"overlap rate must lie in [0, 1], got {rate}")
    digest = hashlib.sha256(f"overlap\x00{seed}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < rate


def first_opinions(item_id: str, *, audit_drawn: bool, overlap_rate: float, seed: int) -> int:
    """Opinions a new review request asks for: 2 for an audit draw or an item in the overlap
    sample, else 1."""
    if audit_drawn or in_overlap_sample(item_id, rate=overlap_rate, seed=seed):
        return 2
    return 1


def second_opinion_why(
    votes: Mapping[str, str],
    *,
    model_label: str | None,
    history: Mapping[str, int],
    min_history: int = MIN_HISTORY,
    exclude: Container[str] = (),
) -> str | None:
    """After a label arrived: why an item that holds exactly one counted opinion (not from an
    excluded reviewer, not empty) needs a second: ``model`` when that opinion disagrees with the
    model's decision (``model_label``; None: unknown, no check), ``new_reviewer`` when its
    reviewer has given fewer than ``min_history`` labels (``history``: labels per reviewer);
    None when it needs none. Items with two or more opinions are
    `adapters.labels.consensus.needs_another_opinion`'s to judge.

    >>> second_opinion_why({"new": "benign"}, model_label="benign", history={"new": 3})
    'new_reviewer'
    >>> second_opinion_why({"ann": "violating"}, model_label="benign", history={"ann": 3})
    'model'
    >>> second_opinion_why({"a": "benign", "b": "benign"}, model_label="violating", history={})
    """
    counted = {r: v for r, v in votes.items() if v and r not in exclude}
    if len(counted) != 1:
        return None
    ((reviewer, label),) = counted.items()
    if model_label is not None and label != model_label:
        return "model"
    return "new_reviewer" if history.get(reviewer, 0) < min_history else None


def model_decision(p_violating: float, routing: RoutingPolicy) -> str | None:
    """The model's decision on an item, as a first opinion is checked against: None inside the
    review band, where the model decided nothing (most requested items are there, and a
    reviewer who disagrees with a coin flip is no sign of a mistake: asked there, second
    opinions took the demo's panel to 1.8 labels per item).

    >>> v1 = RoutingPolicy("v1", block_threshold=0.5, review_low=0.3, review_high=0.7)
    >>> [model_decision(p, v1) for p in (0.1, 0.6, 0.9)]
    ['benign', None, 'violating']
    """
    if route(p_violating, routing) is Action.REVIEW:
        return None
    return "violating" if routing.blocks(p_violating) else "benign"


def labels_per_item(labels: int, items: int) -> float | None:
    """Expert labels spent per labelled item; None before any item has a label.

    >>> labels_per_item(140, 100), labels_per_item(0, 0)
    (1.4, None)
    """
    if items <= 0:
        return None
    return round(labels / items, 3)
