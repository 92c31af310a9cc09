"""What to do with a scored item: allow, block, or send to expert review when the model's
probability of a violation falls in the policy's review band. `RoutingPolicy` is the one form of
the band and the block threshold that deciding code reads (the classifier, the curator, the
collector); `streams.service.serving.routing_for` builds it from a published policy or the
configured defaults."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Action", "RoutingPolicy", "route"]


class Action(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    REVIEW = "review"


@dataclass(frozen=True)
class RoutingPolicy:
    version: str
    block_threshold: float = 0.5
    review_low: float = 0.3
    review_high: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_low <= self.review_high <= 1.0:
            raise ValueError(
                f"review band [{self.review_low}, {self.review_high}] must lie within [0, 1]"
            )
        if not 0.0 <= self.block_threshold <= 1.0:
            raise ValueError(f"block_threshold {self.block_threshold} must lie within [0, 1]")

    def blocks(self, p_violating: float) -> bool:
        """The model's verdict outside review: violating at or above the block threshold.

        >>> strict = RoutingPolicy("v2", block_threshold=0.8, review_low=0.2, review_high=0.8)
        >>> [strict.blocks(p) for p in (0.6, 0.8, 0.9)]
        [False, True, True]
        """
        return p_violating >= self.block_threshold


def route(p_violating: float, policy: RoutingPolicy) -> Action:
    """Route one item by its probability of violating the policy.

    >>> p = RoutingPolicy("v1", block_threshold=0.5, review_low=0.3, review_high=0.7)
    >>> [route(x, p).value for x in (0.1, 0.3, 0.5, 0.7, 0.71)]
    ['allow', 'review', 'review', 'review', 'block']
    """
    if policy.review_low <= p_violating <= policy.review_high:
        return Action.REVIEW
    return Action.BLOCK if policy.blocks(p_violating) else Action.ALLOW
