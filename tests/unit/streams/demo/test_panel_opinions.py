"""The simulated panel answers each request with as many reviewers as the request asks."""

from __future__ import annotations

from streams.demo.panel import opinions_for
from streams.wire.messages import ReviewReason, ReviewRequest


def _request(reason: ReviewReason, opinions: int) -> ReviewRequest:
    return ReviewRequest(
        request_id="rq-1",
        item_id="ad-1",
        text="text",
        reason=reason,
        probabilities={"violating": 0.5},
        policy_version="v1",
        priority=0.5,
        requested_at=0.0,
        opinions=opinions,
    )


def test_the_request_says_how_many_opinions() -> None:
    assert opinions_for(_request(ReviewReason.UNCERTAIN, 1), None) == 1
    assert opinions_for(_request(ReviewReason.AUDIT, 2), None) == 2


def test_a_fixed_count_overrides_and_a_second_opinion_is_one() -> None:
    assert opinions_for(_request(ReviewReason.UNCERTAIN, 1), 3) == 3
    assert opinions_for(_request(ReviewReason.SECOND_OPINION, 2), None) == 1
    assert opinions_for(_request(ReviewReason.SECOND_OPINION, 1), 4) == 1
