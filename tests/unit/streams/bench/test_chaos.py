"""Unit tests for the pure parts of `borderline bench chaos` (streams.bench.chaos_figures): the
fault schedule, and the figures and targets computed from fake decisions, dead letters, labels
and exits; and the hostile generator it shares with the hostile-stream test."""

from __future__ import annotations

import base64
import hashlib
import itertools
from typing import Any

import pytest

from streams.bench.chaos_figures import (
    HOSTILE,
    KILL_REDIS,
    KILL_WORKER,
    RESTART_BROKER,
    STALL_REDIS,
    Exit,
    chaos_figures,
    dead_letter_sha,
    fault_schedule,
    max_gap,
    targets_met,
    unread,
)
from streams.bench.hostile import DECIDED, KINDS, hostile_messages


def test_the_default_stream_holds_every_fault_in_order_without_overlap() -> None:
    faults = fault_schedule(3000 / 10.0)
    kinds = [f.kind for f in faults]
    assert kinds.count(KILL_WORKER) == 3
    assert {f.worker for f in faults if f.kind == KILL_WORKER} == {0, 1}
    assert kinds.count(STALL_REDIS) == kinds.count(KILL_REDIS) == kinds.count(HOSTILE) == 1
    assert kinds.index(KILL_REDIS) < kinds.index(RESTART_BROKER)  # the record still exists
    stall = next(f for f in faults if f.kind == STALL_REDIS)
    assert stall.duration_s == 30.0
    for before, after in itertools.pairwise(faults):
        assert before.at_s + before.duration_s < after.at_s
    assert faults[-1].at_s < 300


def test_a_stream_too_short_for_the_stall_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"too short.*stall_redis.*lower --rate or raise --items"):
        fault_schedule(300, stall_s=70)
    assert fault_schedule(300, stall_s=30)  # the same stream holds a 30 s stall


def test_one_worker_takes_every_kill() -> None:
    assert {f.worker for f in fault_schedule(300, workers=1)} == {0}


def _letter(value: bytes) -> dict[str, Any]:
    return {"value_b64": base64.b64encode(value).decode()}


def _sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def _figures(**overrides: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "items_in": [("a", _sha(b"a")), ("b", _sha(b"b")), ("", _sha(b"x")), ("", _sha(b"x"))],
        "decisions": [
            {"item_id": "a", "decided_at": 10.0},
            {"item_id": "b", "decided_at": 12.0},
            {"item_id": "a", "decided_at": 50.0},
        ],
        "dead_letters": [_letter(b"x"), _letter(b"x")],
        "labels_sent": [("v1", "a", "ann"), ("v1", "a", "bob"), ("v1", "b", "ann")],
        "labels_stored": [("v1", "a", "ann"), ("v1", "a", "bob"), ("v1", "b", "ann")],
        "exits": [Exit("worker-1", -9, True), Exit("worker-1", -9, True)],
    }
    return chaos_figures(**{**inputs, **overrides})


def test_every_item_accounted_for_meets_the_targets_but_the_gap() -> None:
    figures = _figures()
    assert figures["items_in"] == 4
    assert (figures["items_decided"], figures["items_dead_lettered"], figures["items_lost"]) == (
        2,
        2,
        0,
    )
    assert figures["duplicate_decisions"] == 1
    assert (figures["labels_sent"], figures["labels_stored"], figures["labels_lost"]) == (3, 3, 0)
    assert figures["unexpected_exits"] == 0  # the bench's own kills do not count
    assert figures["max_decision_gap_s"] == 38.0
    met = targets_met(figures)
    assert met["items_lost == 0"] and met["labels_lost == 0"] and met["unexpected_exits == 0"]
    assert met["max_decision_gap_s <= 40"]
    assert not met["duplicate_decisions <= 2% of items"]  # 1 of 4


def test_a_value_dead_lettered_once_accounts_for_one_message_only() -> None:
    figures = _figures(dead_letters=[_letter(b"x")])
    assert (figures["items_dead_lettered"], figures["items_lost"]) == (1, 1)
    assert not targets_met(figures)["items_lost == 0"]


def test_an_item_with_a_decision_for_another_id_is_lost() -> None:
    figures = _figures(decisions=[{"item_id": "a", "decided_at": 1.0}])
    assert figures["items_lost"] == 1
    assert figures["max_decision_gap_s"] == 0.0


def test_a_label_sent_but_not_stored_is_lost_and_a_stored_extra_is_not_counted() -> None:
    figures = _figures(labels_stored=[("v1", "a", "ann"), ("v2", "z", "cy")])
    assert (figures["labels_stored"], figures["labels_lost"]) == (1, 2)
    assert not targets_met(figures)["labels_lost == 0"]


def test_what_a_memory_broker_held_unread_at_its_restart_is_its_loss_not_the_services() -> None:
    figures = _figures(
        decisions=[{"item_id": "a", "decided_at": 1.0}],  # b lost, and one "x" of two
        dead_letters=[_letter(b"x")],
        labels_stored=[("v1", "a", "ann")],
        items_unread={_sha(b"b")},  # b was unread when the broker restarted; "x" was read
        labels_unread={("v1", "a", "bob"), ("v1", "a", "ann")},  # ann's was stored anyway
    )
    assert (figures["items_lost"], figures["items_lost_by_broker"]) == (1, 1)
    assert (figures["labels_lost"], figures["labels_lost_by_broker"]) == (1, 1)
    assert not targets_met(figures)["items_lost == 0"]  # the read "x" is still the service's
    assert unread([("b", 0, 7), ("x", 1, 2)], committed={0: 7, 1: 3}) == {"b"}


def test_an_exit_the_bench_did_not_cause_is_unexpected() -> None:
    figures = _figures(exits=[Exit("worker-1", -9, True), Exit("collector", 1, False)])
    assert figures["unexpected_exits"] == 1
    assert figures["unexpected_exit_codes"] == ["collector:1"]
    assert not targets_met(figures)["unexpected_exits == 0"]


def test_a_long_silence_misses_the_gap_target() -> None:
    decisions = [{"item_id": "a", "decided_at": 0.0}, {"item_id": "b", "decided_at": 40.5}]
    figures = _figures(decisions=decisions)
    assert figures["max_decision_gap_s"] == 40.5
    assert not targets_met(figures)["max_decision_gap_s <= 40"]
    assert max_gap([]) == 0.0


def test_a_truncated_dead_letter_is_known_by_the_whole_value_hash() -> None:
    whole = b"y" * 10
    letter = {"value_b64": base64.b64encode(whole[:3]).decode(), "value_truncated": True}
    letter["value_sha256"] = _sha(whole)
    assert dead_letter_sha(letter) == _sha(whole)
    assert dead_letter_sha(_letter(whole)) == _sha(whole)


def test_the_hostile_generator_covers_every_kind_with_unique_keys() -> None:
    messages = hostile_messages(29, total=1000)
    assert len(messages) == 1000
    assert {kind for kind, _, _ in messages} == set(KINDS)
    assert len({key for _, key, _ in messages}) == 1000
    assert len(KINDS) >= 25 and any(reason == DECIDED for _, reason in KINDS.values())
    assert len(hostile_messages(2)) == 2 * len(KINDS)


def test_a_hostile_message_is_counted_by_its_id_whatever_its_kind_should_come_to() -> None:
    # text_too_large is decided under the default text limit: counted by its id, not lost
    from streams.bench.chaos import _item_id

    ids = {kind: _item_id(value) for kind, _, value in hostile_messages(1)}
    assert ids["text_too_large"] and ids["script"] and ids["surrogate_pair"]
    assert ids["deep_array"] == ids["not_json"] == ids["empty_value"] == ids["numeric_id"] == ""
