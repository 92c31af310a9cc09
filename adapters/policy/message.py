"""The wire form of a policy: the document announced on the policy topic."""

from __future__ import annotations

from typing import Any

from adapters.policy.schema import Policy

__all__ = ["to_message"]


def to_message(policy: Policy, *, now: float) -> dict[str, Any]:
    """The fields of a ``PolicyUpdate`` message for ``policy`` published at ``now`` (the streams
    side builds and validates the message)."""
    return {
        "policy_version": policy.version,
        "categories": [c.model_dump() for c in policy.categories],
        "review_low": policy.review_band.low,
        "review_high": policy.review_band.high,
        "examples": [e.model_dump(exclude_none=True) for e in policy.examples],
        "published_at": now,
    }
