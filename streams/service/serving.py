"""What a classify worker serves, as one frozen value: the policy version with its review band and
block threshold, the adapter, and the registry epoch that made that adapter active. Deciding the
next one from what the policy store and the adapter registry hold is `next_state`, a plain
function with no I/O; `streams.service.control` does the reading and the loading around it.

`routing_for` is the one place where a policy, published or the configured default, becomes the
`RoutingPolicy` that routing, curation and the label collector read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from adapters.policy.schema import BENIGN, Policy
from adapters.review.routing import RoutingPolicy
from streams.wire.settings import PolicySettings

__all__ = ["ActiveAdapter", "ServingState", "next_state", "routing_for"]


def routing_for(source: Policy | PolicySettings) -> RoutingPolicy:
    """The routing of a published policy, or of the configured defaults (``BORDERLINE_POLICY__*``).
    A policy with several categories blocks at the lowest of their thresholds: the model scores
    one probability of violating any of them.

    >>> routing_for(PolicySettings(version="v1", block_threshold=0.6))
    RoutingPolicy(version='v1', block_threshold=0.6, review_low=0.3, review_high=0.7)
    """
    if isinstance(source, Policy):
        return RoutingPolicy(
            version=source.version,
            block_threshold=min(c.block_threshold for c in source.categories),
            review_low=source.review_band.low,
            review_high=source.review_band.high,
        )
    return RoutingPolicy(
        version=source.version,
        block_threshold=source.block_threshold,
        review_low=source.review_low,
        review_high=source.review_high,
    )


class ActiveAdapter(Protocol):
    """The registry's record of the active adapter for a policy (`ActiveRecord`)."""

    @property
    def adapter_id(self) -> str: ...

    @property
    def epoch(self) -> int: ...

    @property
    def policy_version(self) -> str: ...


@dataclass(frozen=True)
class ServingState:
    """What every item of a batch is decided with. ``epoch`` is the registry epoch of the promotion
    or rollback that made ``adapter_id`` active for this policy (0: none seen yet for it; the
    adapter then is the one served before). ``audit_rate`` and ``examples`` (the texts of the
    policy's examples of what is forbidden now) drive the review sampling of a transition."""

    routing: RoutingPolicy
    adapter_id: str
    epoch: int = 0
    audit_rate: float | None = None
    examples: tuple[str, ...] = ()

    @property
    def policy_version(self) -> str:
        return self.routing.version


def _under(current: ServingState, policy: Policy) -> ServingState:
    """``current`` under ``policy``: its routing and transition, the adapter kept; a new version
    starts its epochs afresh (the registry holds one active adapter per policy)."""
    return replace(
        current,
        routing=routing_for(policy),
        epoch=current.epoch if policy.version == current.policy_version else 0,
        audit_rate=policy.audit_rate,
        examples=tuple(e.text for e in policy.examples if e.label != BENIGN),
    )


def next_state(
    current: ServingState,
    policy: Policy | None,
    record: ActiveAdapter | None,
    *,
    refused: frozenset[str] = frozenset(),
) -> ServingState:
    """The state to serve next, from the active ``policy`` (None: none published, ``current``'s
    policy stays) and the registry's active ``record`` for that policy. A record for another
    policy, one no newer than the state's epoch, or one naming a ``refused`` adapter changes no
    adapter: a late or replayed promotion never replaces a newer one, and a refused adapter is not
    tried again. Until the new policy has an adapter of its own, the current one keeps serving.

    >>> from types import SimpleNamespace as Record
    >>> now = ServingState(RoutingPolicy("v1"), "boot", epoch=3)
    >>> next_state(now, None, Record(adapter_id="a2", epoch=7, policy_version="v1")).adapter_id
    'a2'
    >>> next_state(now, None, Record(adapter_id="old", epoch=2, policy_version="v1")) == now
    True
    """
    state = current if policy is None else _under(current, policy)
    if record is None or record.policy_version != state.policy_version:
        return state
    if record.epoch <= state.epoch or record.adapter_id in refused:
        return state
    return replace(state, adapter_id=record.adapter_id, epoch=record.epoch)
