"""The pure parts of the rebuild: the replay order, whether a recorded publication or change of
the active adapter is already in the store, and whether a store is complete."""

from __future__ import annotations

import pytest

from adapters.policy.store import PolicyRecord
from adapters.registry.store import ActiveRecord
from streams.service.replay import (
    Recorded,
    StoreMarker,
    activation_step,
    policy_applied,
    replay_order,
    staleness,
)
from streams.wire.messages import AdapterActivated


def _rec(topic: str, offset: int, ms: int) -> Recorded:
    return Recorded(topic, 0, offset, ms, f"{topic}{offset}".encode())


def test_replay_order_is_by_time_and_keeps_each_partitions_order() -> None:
    # a partition whose clock went backwards keeps its own order (offsets are the truth there)
    skewed = [_rec("a", 0, 10), _rec("a", 1, 5), _rec("a", 2, 30)]
    other = [_rec("b", 0, 7), _rec("b", 1, 20)]
    out = [r.value for r in replay_order([skewed, other])]
    assert out == [b"b0", b"a0", b"a1", b"b1", b"a2"]


def test_at_the_same_millisecond_the_partition_given_first_goes_first() -> None:
    registry = [_rec("r", 0, 10)]
    labels = [_rec("l", 0, 10)]
    assert [r.value for r in replay_order([registry, labels])] == [b"r0", b"l0"]
    assert [r.value for r in replay_order([labels, registry])] == [b"l0", b"r0"]


def test_a_publication_is_applied_only_at_its_own_version_and_time() -> None:
    rec = PolicyRecord(version="v1", action="published", actor="ops", at=5.0, sha256="x")
    assert policy_applied([rec], "v1", 5.0)
    assert not policy_applied([rec], "v2", 5.0)
    assert not policy_applied([rec], "v1", 5.5)
    assert not policy_applied([], "v1", 5.0)


def _active(adapter_id: str, previous: str | None, at: float) -> ActiveRecord:
    return ActiveRecord(
        adapter_id=adapter_id,
        previous=previous,
        epoch=1,
        action="promote",
        actor="t",
        reason="gate",
        at=at,
        policy_version="v1",
    )


def _msg(action: str, adapter_id: str, at: float) -> AdapterActivated:
    return AdapterActivated.model_validate(
        {
            "action": action,
            "adapter_id": adapter_id,
            "policy_version": "v1",
            "epoch": 2,
            "actor": "ops",
            "reason": "r",
            "at": at,
        }
    )


@pytest.mark.parametrize(
    ("history", "active", "message", "step"),
    [
        # the same adapter at the same time is in the history: done, whatever is active now
        (
            [_active("a1", None, 1.0)],
            _active("a2", "a1", 2.0),
            _msg("promote", "a1", 1.0),
            "applied",
        ),
        # already the active one (e.g. a re-recorded change): nothing to do
        ([], _active("a1", None, 1.0), _msg("promote", "a1", 3.0), "active"),
        # a rollback to the adapter the current one replaced: the registry's rollback
        ([], _active("a2", "a1", 2.0), _msg("rollback", "a1", 3.0), "rollback"),
        # a rollback the registry cannot repeat (the record lacks a change): promote the target
        ([], _active("a3", "a2", 2.0), _msg("rollback", "a1", 3.0), "promote"),
        ([], None, _msg("rollback", "a1", 3.0), "promote"),
        ([], None, _msg("promote", "a1", 3.0), "promote"),
        ([], _active("a1", None, 1.0), _msg("promote", "a2", 3.0), "promote"),
    ],
)
def test_activation_step(
    history: list[ActiveRecord],
    active: ActiveRecord | None,
    message: AdapterActivated,
    step: str,
) -> None:
    assert activation_step(history, active, message) == step


def test_staleness_and_the_marker() -> None:
    assert staleness(None) is not None
    assert staleness(StoreMarker(epoch=1, at=0.0), epoch=2) == "store epoch 1 is older than 2"
    assert staleness(StoreMarker(epoch=2, at=0.0), epoch=2) is None
    assert staleness(StoreMarker(epoch=3, at=0.0), epoch=2) is None  # a newer release wrote it
    marker = StoreMarker(epoch=1, at=5.0, replayed=12)
    assert StoreMarker.parse(marker.model_dump_json()) == marker
    assert StoreMarker.parse(marker.model_dump_json().encode()) == marker
    assert StoreMarker.parse(None) is None
    assert StoreMarker.parse(b"{garbage") is None
    assert StoreMarker.parse('{"at": 1.0}') is None
