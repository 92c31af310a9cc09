"""The label admission the collector and the store rebuild apply alike: gather what the service
knows about a label (its reviewer's key, the requests issued for its item, its policy's
categories) and ask `adapters.labels.admission.refusal`. A refused label is a `MessageError`
with the reason (``unsigned_label``, ``bad_signature``, ``unrequested_item``,
``request_mismatch``, ``policy_mismatch``, ``unknown_category``, ``future_timestamp``,
``invalid_timestamp``): the collector dead-letters it, the rebuild skips it."""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from adapters.labels.admission import Evidence, LabelClaim, refusal, sign_label
from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore
from adapters.policy.schema import Policy, PolicyError
from adapters.policy.store import PolicyStore
from streams.wire.errors import MessageError
from streams.wire.messages import ReviewLabel
from streams.wire.settings import PolicySettings, ReviewSettings

__all__ = ["Admission", "LabelAdmission", "claim_of", "signed"]


class Admission(Protocol):
    """Why a label is refused (None: admitted)."""

    async def refusal(self, label: ReviewLabel, *, now: float) -> MessageError | None: ...


class PolicyReader(Protocol):
    """`adapters.policy.store.PolicyStore`."""

    async def get(self, version: str) -> Policy: ...


def claim_of(label: ReviewLabel) -> LabelClaim:
    """What ``label`` says, as signed (every field but the signature)."""
    return LabelClaim(
        item_id=label.item_id,
        reviewer_id=label.reviewer_id,
        label=label.label,
        policy_version=label.policy_version,
        request_id=label.request_id,
        labeled_at=label.labeled_at,
        schema_version=label.schema_version,
    )


def signed(label: ReviewLabel, key: bytes) -> ReviewLabel:
    """``label`` with its signature under its reviewer's ``key`` (what a Kafka client sends)."""
    return label.model_copy(update={"signature": sign_label(key, claim_of(label))})


class LabelAdmission:
    """``defaults``: the policy a worker serves before any is published (its one category);
    ``max_skew_s``: how far ahead of this clock a label's time may be."""

    def __init__(
        self,
        store: LabelStore,
        keys: ReviewerKeys,
        policies: PolicyReader,
        defaults: PolicySettings,
        *,
        max_skew_s: float,
    ) -> None:
        self.store = store
        self.keys = keys
        self.policies = policies
        self.defaults = defaults
        self.max_skew_s = max_skew_s
        self._categories: dict[str, list[str]] = {}  # published documents never change

    @classmethod
    def build(
        cls, redis: Redis, prefix: str, review: ReviewSettings, policy: PolicySettings
    ) -> LabelAdmission:
        """The admission of one deployment's store, as configured."""
        secret = review.key_secret.get_secret_value().encode()
        return cls(
            LabelStore(redis, prefix),
            ReviewerKeys(redis, prefix, secret),
            PolicyStore(redis, prefix),
            policy,
            max_skew_s=review.label_max_skew_s,
        )

    async def categories(self, version: str) -> list[str] | None:
        """The categories of a policy version: its published document's, else the configured
        default's when it is the default version; None when there is no such policy."""
        known = self._categories.get(version)
        if known is not None:
            return known
        try:
            policy = await self.policies.get(version)
        except PolicyError:
            return [self.defaults.category] if version == self.defaults.version else None
        self._categories[version] = policy.category_names
        return self._categories[version]

    async def refusal(self, label: ReviewLabel, *, now: float) -> MessageError | None:
        key = await self.keys.key_for(label.reviewer_id) if label.signature else None
        evidence = Evidence(
            key=key,
            requests=await self.store.requests_of(label.item_id),
            categories=await self.categories(label.policy_version),
            now=now,
            max_skew_s=self.max_skew_s,
        )
        found = refusal(claim_of(label), label.signature, evidence)
        return None if found is None else MessageError(found.reason, found.detail)
