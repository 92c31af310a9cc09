"""What replaying the record does, decided without I/O: the order records are replayed in, whether
a recorded publication or change of the active adapter is already in the store (so a replay over
a store that has it changes nothing), and whether a store is complete (its epoch marker).

The I/O lives in `streams.service.rebuild`: it reads the topics, asks these functions, and calls
the same store methods the live service calls.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.policy.store import PolicyRecord
from adapters.registry.store import ActiveRecord
from streams.wire.messages import AdapterActivated

__all__ = [
    "STORE_EPOCH",
    "Recorded",
    "StoreMarker",
    "activation_step",
    "policy_applied",
    "replay_order",
    "staleness",
]

# The layout of what Redis holds. A store marked with an older epoch was written by an older
# release and is rebuilt; raise it when the store's keys or their meaning change.
STORE_EPOCH = 1


@dataclass(frozen=True)
class Recorded:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None


def replay_order(partitions: Iterable[Sequence[Recorded]]) -> list[Recorded]:
    """Every record of every partition, by time; each partition keeps its own order, and at the
    same millisecond the partition given first goes first (give the registries before labels).

    >>> a = [Recorded("reviewers", 0, 0, 10, b"r1"), Recorded("reviewers", 0, 1, 30, b"r2")]
    >>> b = [Recorded("labels", 0, 0, 10, b"l1"), Recorded("labels", 0, 1, 20, b"l2")]
    >>> [r.value for r in replay_order([a, b])]
    [b'r1', b'l1', b'l2', b'r2']
    """
    return list(heapq.merge(*partitions, key=lambda r: r.timestamp_ms))


def policy_applied(history: Sequence[PolicyRecord], version: str, at: float) -> bool:
    """Is the publication of ``version`` at ``at`` already in the store's history?

    >>> rec = PolicyRecord(version="v1", action="published", actor="ops", at=5.0, sha256="x")
    >>> policy_applied([rec], "v1", 5.0), policy_applied([rec], "v1", 6.0)
    (True, False)
    """
    return any(r.version == version and r.at == at for r in history)


ActivationStep = Literal["applied", "active", "rollback", "promote"]


def activation_step(
    history: Sequence[ActiveRecord], active: ActiveRecord | None, message: AdapterActivated
) -> ActivationStep:
    """What replaying a recorded change of the active adapter does: ``applied`` when the store's
    history holds it already (the same adapter at the same time), ``active`` when that adapter is
    active already (nothing to do), ``rollback`` when it was a rollback to the adapter the current
    one replaced (the registry's own rollback restores it), else ``promote`` it.

    >>> m = AdapterActivated(action="rollback", adapter_id="a1", policy_version="v1", epoch=3,
    ...                      actor="ops", reason="bad", at=9.0)
    >>> cur = ActiveRecord(adapter_id="a2", previous="a1", epoch=2, action="promote",
    ...                    actor="t", reason="gate", at=8.0, policy_version="v1")
    >>> activation_step([cur], cur, m)
    'rollback'
    """
    if any(r.adapter_id == message.adapter_id and r.at == message.at for r in history):
        return "applied"
    if active is not None and active.adapter_id == message.adapter_id:
        return "active"
    if (
        message.action == "rollback"
        and active is not None
        and active.previous == message.adapter_id
    ):
        return "rollback"
    return "promote"


class StoreMarker(BaseModel):
    """Written once a store holds everything the record holds (by a rebuild, or by the first
    rebuild of an empty record): a store without it is empty or incomplete."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    at: float
    replayed: int = 0

    @classmethod
    def parse(cls, raw: bytes | str | None) -> StoreMarker | None:
        """The marker, or None when absent or unreadable (either way: rebuild)."""
        if raw is None:
            return None
        try:
            return cls.model_validate_json(raw)
        except ValidationError:
            return None


def staleness(marker: StoreMarker | None, *, epoch: int = STORE_EPOCH) -> str | None:
    """Why the store must be rebuilt, or None when it is complete.

    >>> staleness(None)
    'no epoch marker: the store is empty or was restored incomplete'
    >>> staleness(StoreMarker(epoch=0, at=1.0), epoch=1)
    'store epoch 0 is older than 1'
    >>> staleness(StoreMarker(epoch=1, at=1.0), epoch=1) is None
    True
    """
    if marker is None:
        return "no epoch marker: the store is empty or was restored incomplete"
    if marker.epoch < epoch:
        return f"store epoch {marker.epoch} is older than {epoch}"
    return None
