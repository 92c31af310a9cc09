"""Unit tests for adapters.routing: the review band (edges inclusive), the block threshold outside
it, and policies that cannot be built."""

from __future__ import annotations

import doctest
import re

import pytest

import adapters.review.routing
from adapters.review.routing import Action, RoutingPolicy, route

POLICY = RoutingPolicy("v1", block_threshold=0.5, review_low=0.3, review_high=0.7)


@pytest.mark.parametrize(
    ("p", "action"),
    [
        (0.0, Action.ALLOW),
        (0.29, Action.ALLOW),
        (0.3, Action.REVIEW),  # lower edge is in the band
        (0.5, Action.REVIEW),
        (0.7, Action.REVIEW),  # upper edge is in the band
        (0.71, Action.BLOCK),
        (1.0, Action.BLOCK),
    ],
)
def test_review_band_edges_are_inclusive(p: float, action: Action) -> None:
    assert route(p, POLICY) is action


@pytest.mark.parametrize(
    ("p", "action"),
    [(0.1, Action.ALLOW), (0.49, Action.ALLOW), (0.5, Action.BLOCK), (0.8, Action.BLOCK)],
)
def test_block_threshold_outside_the_band(p: float, action: Action) -> None:
    no_band = RoutingPolicy("v1", block_threshold=0.5, review_low=0.95, review_high=0.95)
    assert route(p, no_band) is action


def test_threshold_below_the_band_blocks_below_it() -> None:
    policy = RoutingPolicy("v1", block_threshold=0.2, review_low=0.4, review_high=0.6)
    assert route(0.1, policy) is Action.ALLOW
    assert route(0.2, policy) is Action.BLOCK
    assert route(0.3, policy) is Action.BLOCK
    assert route(0.5, policy) is Action.REVIEW
    assert route(0.61, policy) is Action.BLOCK


def test_band_of_one_point() -> None:
    policy = RoutingPolicy("v1", block_threshold=0.5, review_low=0.5, review_high=0.5)
    assert route(0.5, policy) is Action.REVIEW
    assert route(0.4999, policy) is Action.ALLOW
    assert route(0.5001, policy) is Action.BLOCK


def test_default_policy_matches_the_documented_band() -> None:
    policy = RoutingPolicy("v1")
    assert (policy.block_threshold, policy.review_low, policy.review_high) == (0.5, 0.3, 0.7)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"review_low": 0.8, "review_high": 0.2}, "0.8"),
        ({"review_low": -0.1}, "-0.1"),
        ({"review_high": 1.5}, "1.5"),
        ({"block_threshold": 1.2}, "1.2"),
        ({"block_threshold": -0.01}, "-0.01"),
    ],
)
def test_invalid_policies_are_rejected_naming_the_value(
    kwargs: dict[str, float], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        RoutingPolicy("v1", **kwargs)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        POLICY.review_low = 0.1  # type: ignore[misc]


def test_doctest() -> None:
    result = doctest.testmod(adapters.review.routing)
    assert result.attempted > 0
    assert result.failed == 0
