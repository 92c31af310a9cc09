"""Consensus of the trusted reviewers' votes on one item, when another opinion is needed, and the
deterministic train/eval split of settled items."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Consensus",
    "consensus",
    "counted_votes",
    "is_category",
    "needs_another_opinion",
    "split_of",
]


def is_category(label: str) -> bool:
    """Whether a label names a category: an empty or blank string does not (it is no vote).

    >>> is_category("benign"), is_category(""), is_category("  ")
    (True, False, False)
    """
    return bool(label.strip())


def counted_votes(votes: Mapping[str, str], exclude: Container[str]) -> dict[str, str]:
    """The votes of the reviewers not in `exclude`; a label that is no category is no vote.

    >>> counted_votes({"ann": "v", "bob": "", "cy": "b"}, exclude={"cy"})
    {'ann': 'v'}
    """
    return {
        reviewer: label
        for reviewer, label in votes.items()
        if reviewer not in exclude and is_category(label)
    }


@dataclass(frozen=True)
class Consensus:
    """The majority label of one item: None when no label holds a strict majority."""

    item_id: str
    label: str | None
    votes: int
    agreeing: int
    unanimous: bool


def _strict_majority(counts: Counter[str], total: int) -> tuple[str | None, int]:
    if not counts:
        return None, 0
    label, top = counts.most_common(1)[0]
    return (label if 2 * top > total else None), top


def consensus(item_id: str, votes: Mapping[str, str], *, exclude: Container[str] = ()) -> Consensus:
    """Majority vote over the reviewers not in `exclude`.

    The label must hold a strict majority (more than half the counted votes): with two
    categories that means None exactly on ties; with several, a plurality short of half (2 of
    4 votes) is None too. No counted votes: label None, votes 0, not unanimous.

    >>> consensus("i1", {"ann": "violating", "bob": "violating", "cy": "benign"})
    Consensus(item_id='i1', label='violating', votes=3, agreeing=2, unanimous=False)
    >>> consensus("i1", {"ann": "violating", "bob": "benign"}).label is None
    True
    >>> consensus("i1", {"ann": "violating", "bob": "benign"}, exclude={"bob"}).unanimous
    True
    """
    counted = counted_votes(votes, exclude)
    counts = Counter(counted.values())
    label, top = _strict_majority(counts, len(counted))
    return Consensus(
        item_id=item_id,
        label=label,
        votes=len(counted),
        agreeing=top if label is not None else 0,
        unanimous=len(counts) == 1,
    )


def needs_another_opinion(
    votes: Mapping[str, str], *, exclude: Container[str] = (), min_votes: int = 2
) -> bool:
    """Whether an item should go to one more reviewer.

    Counting only reviewers not in `exclude`: True when the votes disagree and either no label
    holds a strict majority or there are fewer than `min_votes` of them. Agreeing votes (even
    one) are settled. An item whose every vote came from an excluded reviewer has no trusted
    label and needs another opinion; an item with no votes at all has not been reviewed yet,
    which is for routing to decide, so False.

    >>> needs_another_opinion({"ann": "violating", "bob": "benign"})
    True
    >>> needs_another_opinion({"ann": "violating", "bob": "benign", "cy": "benign"})
    False
    >>> needs_another_opinion({"ann": "violating", "bob": "benign"}, exclude={"bob"})
    False
    >>> needs_another_opinion({"bob": "benign"}, exclude={"bob"})
    True
    """
    if min_votes < 1:
        raise ValueError(f"min_votes must be at least 1, got {min_votes}")
    counted = counted_votes(votes, exclude)
    if not counted:
        return bool(votes)
    counts = Counter(counted.values())
    if len(counts) == 1:
        return False
    label, _ = _strict_majority(counts, len(counted))
    return label is None or len(counted) < min_votes


def split_of(
    item_id: str, *, eval_share: float = 0.4, salt: str = "borderline-split-v1"
) -> Literal["train", "eval"]:
    """Train or eval, fixed by sha256(salt + item_id): stable across processes and restarts.

    The first 8 bytes of the digest as a fraction u in [0, 1); eval when u < eval_share. So an
    id in eval at one share stays in eval at any larger share; 0.0 is all train, 1.0 all eval.

    >>> split_of("item-1"), split_of("item-1", eval_share=1.0), split_of("item-1", eval_share=0.0)
    ('train', 'eval', 'train')
    """
    if not 0.0 <= eval_share <= 1.0:
        raise ValueError(f"eval_share must be within [0, 1], got {eval_share}")
    digest = hashlib.sha256((salt + item_id).encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2.0**64
    return "eval" if fraction < eval_share else "train"
