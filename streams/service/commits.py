"""Offsets are committed by a member of the group, for the assignment they were read under.

aiokafka retries a commit that met a retriable error (the broker gone, the coordinator moving)
until it goes through, and builds every attempt from the coordinator's state at that moment.
When the heartbeat meanwhile heard UnknownMemberId (a restarted memory broker knows no member),
the coordinator had reset its generation to -1 and its member id to "": the retry went out as a
commit from outside the group, which a broker accepts for an empty group, and the restarted
broker's group is empty. The offsets read from the lost log were committed into the new one,
the next assignment read from there, and the items below them were never decided: 52 of the 100
items sent after the restart in `test_broker_restart` (a CI run, after the in-flight records
themselves had been fenced by `FencedConsumer`). Offsets sent once the group was joined again
(a new member id, the old assignment replaced) would be as wrong.

`member_commits_only` refuses such an attempt with aiokafka's own `CommitFailedError` ("the
group has already rebalanced"), which faust takes as a commit lost to a rebalance, and a plain
consumer's caller retries with its new assignment's positions. What was read and not committed
is read again: at-least-once, as after any rebalance."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import CommitFailedError

__all__ = ["REFUSED", "member_commits_only"]

log = logging.getLogger(__name__)

REFUSED = (
    "Commit cannot be completed since the group has already rebalanced: "
    "these offsets were read under an assignment this consumer no longer holds"
)
"""The refusal's message; faust drops a commit whose error says "already rebalanced"."""


def member_commits_only(consumer: AIOKafkaConsumer) -> None:
    """From now on, every commit attempt of this started consumer (the first and each retry)
    goes out only while it is a member of its group (a generation, a member id) and the
    assignment the offsets belong to is still its own; otherwise it fails with
    `CommitFailedError`. A consumer without a group is left as it is."""
    coordinator: Any = getattr(consumer, "_coordinator", None)
    if not isinstance(coordinator, GroupCoordinator) or getattr(
        coordinator, "_members_only", False
    ):
        return
    send = coordinator._do_commit_offsets

    async def as_member(assignment: Any, offsets: Any) -> Any:
        if offsets and (
            coordinator.generation < 0 or not coordinator.member_id or not assignment.active
        ):
            log.warning(
                "commit of %d offsets refused: %s (generation %s)",
                len(offsets),
                "the assignment was revoked" if coordinator.member_id else "not a group member",
                coordinator.generation,
            )
            raise CommitFailedError(REFUSED)
        return await send(assignment, offsets)

    coordinator._do_commit_offsets = as_member
    coordinator._members_only = True
