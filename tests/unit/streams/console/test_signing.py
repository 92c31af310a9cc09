"""Console labels are signed for the signed-in reviewer with that reviewer's key from the key
ring, issued when missing: the signature verifies as the collector verifies it."""

from __future__ import annotations

from redis.asyncio import Redis

from adapters.labels.admission import signature_valid
from adapters.labels.keyring import ReviewerKeys
from streams.console.signing import keyed_signer
from streams.service.admission import claim_of
from streams.wire.messages import ReviewLabel
from tests.unit.conftest import RunRedis


def test_labels_are_signed_with_the_reviewers_own_key(run_redis: RunRedis, prefix: str) -> None:
    async def body(redis: Redis) -> None:
        ring = ReviewerKeys(redis, prefix, b"service secret")
        sign = keyed_signer(ring)
        label = ReviewLabel(
            item_id="ad-1",
            reviewer_id="alice",
            label="violating",
            policy_version="v1",
            request_id="rr-1",
            labeled_at=1_900_000_000.25,
        )
        signed = await sign(label)
        key = await ring.key_for("alice")  # issued on first use
        assert key is not None and signed.signature is not None
        assert signature_valid(key, claim_of(signed), signed.signature)
        bob = await ring.issue("bob")
        assert not signature_valid(bob, claim_of(signed), signed.signature)
        assert (await sign(label)).signature == signed.signature  # the same key next time

    run_redis(body)
