"""Is a process alive, and is it ready: the decision behind ``/healthz`` and ``/readyz``, pure.

A process keeps a `Progress` (when it last handled a batch, when its consumer group's committed
offsets last moved, its lag, whether it has partitions and its model); `liveness` and
`readiness` read it at a given ``now``. A process is stuck when it has work (lag above zero, or
a step under way) and has made no progress for ``stuck_after_s``: the window starts at the last
batch, the last commit, or the moment the work appeared, whichever is latest, so an idle process
that just got work is not stuck yet.

>>> p = Progress(started_at=0.0)
>>> p.observe_lag(5, now=10.0)
>>> liveness(p, now=200.0, stuck_after_s=300.0).ok
True
>>> liveness(p, now=400.0, stuck_after_s=300.0).reason
'stuck: lag 5, no progress for 390 s (window 300 s)'
>>> p.handled(now=401.0)
>>> liveness(p, now=402.0, stuck_after_s=300.0).ok
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Progress", "Verdict", "liveness", "readiness", "report"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


@dataclass
class Progress:
    """What a process has done, written by its event loop, read by the health endpoint's
    thread (plain attribute writes: each read sees a whole value)."""

    started_at: float
    needs_partitions: bool = True  # a consumer; the trainer has none
    last_batch_at: float | None = None
    last_commit_at: float | None = None
    lag: int | None = None  # None: not measured yet
    waiting_since: float | None = None  # when lag last went from zero (or unknown) to above
    busy_since: float | None = None  # a step under way since (the trainer)
    assigned: bool = False  # the consumer has partitions
    loaded: bool = False  # the model (or whatever the process needs to work) is in place
    note: str = ""  # what else the process wants to say (the trainer's lease)

    def handled(self, *, now: float) -> None:
        self.last_batch_at = now

    def committed(self, *, now: float) -> None:
        self.last_commit_at = now

    def observe_lag(self, lag: int, *, now: float) -> None:
        if lag > 0 and not (self.lag or 0) > 0:
            self.waiting_since = now
        self.lag = lag

    def begin(self, *, now: float) -> None:
        self.busy_since = now

    def end(self, *, now: float) -> None:
        self.busy_since = None
        self.last_batch_at = now


def _last_progress(p: Progress) -> float:
    marks = [p.started_at, p.last_batch_at, p.last_commit_at, p.waiting_since, p.busy_since]
    return max(m for m in marks if m is not None)


def liveness(p: Progress, *, now: float, stuck_after_s: float) -> Verdict:
    """Fails only when the process has work and made no progress within ``stuck_after_s``."""
    idle = now - _last_progress(p)
    if p.busy_since is not None and idle > stuck_after_s:
        return Verdict(
            False, f"stuck: one step under way for {idle:.0f} s (window {stuck_after_s:.0f} s)"
        )
    if (p.lag or 0) > 0 and idle > stuck_after_s:
        return Verdict(
            False,
            f"stuck: lag {p.lag}, no progress for {idle:.0f} s (window {stuck_after_s:.0f} s)",
        )
    return Verdict(True, "ok")


def readiness(p: Progress) -> Verdict:
    """Ready once the process has what it works with: its model (or ports), and partitions."""
    if not p.loaded:
        return Verdict(False, "not ready: still loading")
    if p.needs_partitions and not p.assigned:
        return Verdict(False, "not ready: no partitions assigned")
    return Verdict(True, "ready")


def report(p: Progress, *, now: float, stuck_after_s: float) -> dict[str, Any]:
    """The JSON body of both endpoints: the verdicts and what they were decided on."""

    def ago(at: float | None) -> float | None:
        return None if at is None else round(now - at, 3)

    live, ready = liveness(p, now=now, stuck_after_s=stuck_after_s), readiness(p)
    return {
        "live": live.ok,
        "ready": ready.ok,
        "reason": live.reason if not live.ok else ready.reason,
        "lag": p.lag,
        "last_batch_s_ago": ago(p.last_batch_at),
        "last_commit_s_ago": ago(p.last_commit_at),
        "busy_s": ago(p.busy_since),
        "stuck_after_s": stuck_after_s,
        "uptime_s": ago(p.started_at),
        "note": p.note,
    }
