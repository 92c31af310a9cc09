"""The pure parts of `borderline bench chaos`: when each fault is injected, and the figures and
targets computed from what the run observed (decisions, dead letters, labels sent and stored,
process exits). No I/O, no clock: the run passes everything in."""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

K = TypeVar("K")

__all__ = [
    "Exit",
    "Fault",
    "chaos_figures",
    "dead_letter_sha",
    "fault_schedule",
    "max_gap",
    "targets_met",
    "unread",
]

KILL_WORKER = "kill_worker"
STALL_REDIS = "stall_redis"
KILL_REDIS = "kill_redis"
RESTART_BROKER = "restart_broker"
HOSTILE = "hostile"

# share of the stream's duration at which each fault starts; three worker kills alternate workers
_PLAN: tuple[tuple[float, str, int], ...] = (
    (0.08, KILL_WORKER, 0),
    (0.12, HOSTILE, 0),
    (0.22, KILL_WORKER, 1),
    (0.28, STALL_REDIS, 0),
    (0.50, KILL_WORKER, 0),
    (0.58, KILL_REDIS, 0),
    (0.75, RESTART_BROKER, 0),
)


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the stream started
    kind: str
    worker: int = 0  # which worker (kill_worker)
    duration_s: float = 0.0  # how long it lasts (stall_redis, hostile)


def fault_schedule(
    stream_s: float, *, workers: int = 2, stall_s: float = 30.0, hostile_s: float = 20.0
) -> list[Fault]:
    """The faults of a stream lasting ``stream_s`` seconds, in order. Each fault begins after
    the one before has ended (at least 5 s later); the broker restart comes after the Redis kill
    (a memory broker forgets the topics the store is rebuilt from). ValueError when the stream
    is too short for that.

    >>> [(f.at_s, f.kind) for f in fault_schedule(400)][:4]
    [(32.0, 'kill_worker'), (48.0, 'hostile'), (88.0, 'kill_worker'), (112.0, 'stall_redis')]
    >>> fault_schedule(100)
    Traceback (most recent call last):
    ...
    ValueError: a stream of 100 s is too short for the faults (kill_worker at 8 s lasts 0 s and \
hostile follows at 12 s): lower --rate or raise --items
    """
    faults = []
    for share, kind, worker in _PLAN:
        duration = stall_s if kind == STALL_REDIS else hostile_s if kind == HOSTILE else 0.0
        faults.append(Fault(round(share * stream_s, 1), kind, worker % workers, duration))
    for before, after in itertools.pairwise(faults):
        if before.at_s + before.duration_s + 5.0 > after.at_s:
            raise ValueError(
                f"a stream of {stream_s:g} s is too short for the faults ({before.kind} at "
                f"{before.at_s:g} s lasts {before.duration_s:g} s and {after.kind} follows at "
                f"{after.at_s:g} s): lower --rate or raise --items"
            )
    return faults


@dataclass(frozen=True)
class Exit:
    """A process that ended during the run: ``expected`` when the bench itself killed it."""

    process: str
    code: int
    expected: bool


def dead_letter_sha(letter: Mapping[str, Any]) -> str:
    """The sha256 of a dead letter's whole original (from its hash when only a prefix is kept).

    >>> dead_letter_sha({"value_b64": base64.b64encode(b"x").decode()})[:8]
    '2d711642'
    >>> dead_letter_sha({"value_b64": "", "value_truncated": True, "value_sha256": "ab"})
    'ab'
    """
    if letter.get("value_truncated"):
        return str(letter["value_sha256"])
    return hashlib.sha256(base64.b64decode(letter["value_b64"])).hexdigest()


def max_gap(times: Iterable[float]) -> float:
    """The longest wait between consecutive decisions (0 with fewer than two).

    >>> max_gap([3.0, 1.0, 10.0, 11.0])
    7.0
    >>> max_gap([5.0])
    0.0
    """
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def unread(placed: Iterable[tuple[K, int, int]], committed: Mapping[int, int]) -> set[K]:
    """The keys of records (key, partition, offset) that their consumer group had not read when
    the broker restarted: at or past the group's committed offset in their partition (the log's
    start, 0 on a memory broker, where it committed nothing). A memory-only broker forgets
    them: their loss is the broker's, and only durable storage prevents it.

    >>> sorted(unread([("a", 0, 4), ("b", 0, 5), ("c", 1, 0), ("d", 2, 9)], {0: 5, 2: 10}))
    ['b', 'c']
    """
    return {key for key, partition, offset in placed if offset >= committed.get(partition, 0)}


def chaos_figures(
    *,
    items_in: Sequence[tuple[str, str]],
    decisions: Sequence[Mapping[str, Any]],
    dead_letters: Sequence[Mapping[str, Any]],
    labels_sent: Iterable[tuple[str, str, str]],
    labels_stored: Iterable[tuple[str, str, str]],
    exits: Sequence[Exit],
    items_unread: Collection[str] = (),
    labels_unread: Collection[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """The benchmark's figures. ``items_in``: (item id, sha256 of the value) of every message the
    broker acknowledged on the item topic (an item id of "" when it has none); a message is
    decided when its item id has a decision, dead-lettered when a dead letter holds its value,
    lost otherwise. Labels are (policy, item, reviewer). ``items_unread`` (sha256s) and
    ``labels_unread``: what the broker held unread when it restarted without storage
    (`unread`); such a message never decided or stored counts as lost by the broker
    (``items_lost_by_broker``, ``labels_lost_by_broker``), not in ``items_lost`` or
    ``labels_lost``, which count the service's own losses.

    >>> figures = chaos_figures(
    ...     items_in=[("a", "1"), ("b", "2"), ("", "3"), ("c", "4")],
    ...     decisions=[{"item_id": "a", "decided_at": 1.0}, {"item_id": "a", "decided_at": 4.0}],
    ...     dead_letters=[{"value_b64": "", "value_truncated": True, "value_sha256": "3"}],
    ...     labels_sent=[("v1", "a", "ann"), ("v1", "a", "bob")],
    ...     labels_stored=[("v1", "a", "ann")],
    ...     exits=[Exit("worker-1", -9, True), Exit("collector", 1, False)],
    ... )
    >>> [figures[k] for k in ("items_decided", "items_dead_lettered", "items_lost")]
    [1, 1, 2]
    >>> [figures[k] for k in ("duplicate_decisions", "labels_lost", "unexpected_exits")]
    [1, 1, 1]
    >>> figures["max_decision_gap_s"]
    3.0
    """
    decided_ids = {str(d["item_id"]) for d in decisions}
    dead = Counter(dead_letter_sha(letter) for letter in dead_letters)
    decided = dead_lettered = lost = by_broker = 0
    items_unread = set(items_unread)
    for item_id, sha in items_in:
        if item_id and item_id in decided_ids:
            decided += 1
        elif dead[sha] > 0:
            dead[sha] -= 1
            dead_lettered += 1
        elif sha in items_unread:
            by_broker += 1
        else:
            lost += 1
    per_item = Counter(str(d["item_id"]) for d in decisions)
    sent, stored = set(labels_sent), set(labels_stored)
    missing = sent - stored
    unexpected = [e for e in exits if not e.expected]
    return {
        "items_in": len(items_in),
        "items_decided": decided,
        "items_dead_lettered": dead_lettered,
        "items_lost": lost,
        "items_lost_by_broker": by_broker,
        "duplicate_decisions": sum(n - 1 for n in per_item.values()),
        "labels_sent": len(sent),
        "labels_stored": len(stored & sent),
        "labels_lost": len(missing - set(labels_unread)),
        "labels_lost_by_broker": len(missing & set(labels_unread)),
        "unexpected_exits": len(unexpected),
        "unexpected_exit_codes": [f"{e.process}:{e.code}" for e in unexpected],
        "max_decision_gap_s": round(max_gap(float(d["decided_at"]) for d in decisions), 2),
    }


def targets_met(figures: Mapping[str, Any]) -> dict[str, bool]:
    """Each target next to whether the figures meet it.

    >>> targets_met({"items_in": 100, "items_lost": 0, "labels_lost": 0, "unexpected_exits": 0,
    ...              "max_decision_gap_s": 41.0, "duplicate_decisions": 2})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'items_lost == 0': True, 'labels_lost == 0': True, 'unexpected_exits == 0': True,
     'max_decision_gap_s <= 40': False, 'duplicate_decisions <= 2% of items': True}
    """
    return {
        "items_lost == 0": figures["items_lost"] == 0,
        "labels_lost == 0": figures["labels_lost"] == 0,
        "unexpected_exits == 0": figures["unexpected_exits"] == 0,
        "max_decision_gap_s <= 40": figures["max_decision_gap_s"] <= 40,
        "duplicate_decisions <= 2% of items": figures["duplicate_decisions"]
        <= 0.02 * figures["items_in"],
    }
