"""Waiting for a condition instead of sleeping for a guessed time: poll a predicate until it
returns something truthy or a deadline passes, then fail naming what was awaited and the last
value seen. A test that awaits an event finishes as soon as the event happens and says what did
not happen when it fails; a fixed sleep does neither."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["Progress", "WaitTimeout", "wait_until", "wait_until_async"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited condition did not hold before the deadline (an assertion failure)."""


@dataclass(frozen=True)
class Progress:
    """A predicate's answer that says how far things got: true when ``done``; a wait that times
    out shows its facts.

    >>> Progress(False, {"labels": 80, "excluded": []})
    labels=80, excluded=[]
    >>> bool(Progress(True))
    True
    """

    done: bool
    facts: dict[str, object] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.done

    def __repr__(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.facts.items()) or repr(self.done)


def _timed_out(what: str, timeout_s: float, polls: int, last: object) -> WaitTimeout:
    shown = repr(last)
    if len(shown) > 500:
        shown = shown[:500] + "..."
    return WaitTimeout(
        f"timed out after {timeout_s:g}s ({polls} polls) waiting for {what}: {shown}"
    )


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    interval_s: float = 0.1,
    what: str = "the condition",
) -> T:
    """Call ``predicate`` every ``interval_s`` until it returns a truthy value, and return that
    value; after ``timeout_s`` raise `WaitTimeout` naming ``what`` and the last value. The
    predicate is always called at least once, and once more at the deadline.

    >>> wait_until(lambda: 42, timeout_s=1, what="the answer")
    42
    >>> wait_until(lambda: [], 0.05, 0.01, what="an item")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tests.waiting.WaitTimeout: timed out after 0.05s (... polls) waiting for an item: []
    """
    deadline = time.monotonic() + timeout_s
    polls = 0
    while True:
        value = predicate()
        polls += 1
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(what, timeout_s, polls, value)
        time.sleep(min(interval_s, left))


async def wait_until_async(
    predicate: Callable[[], Awaitable[T]],
    timeout_s: float,
    interval_s: float = 0.1,
    what: str = "the condition",
) -> T:
    """`wait_until` for a coroutine predicate, sleeping on the event loop between polls.

    >>> async def ready() -> str:
    ...     return "ready"
    >>> asyncio.run(wait_until_async(ready, timeout_s=1, what="readiness"))
    'ready'
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    polls = 0
    while True:
        value = await predicate()
        polls += 1
        if value:
            return value
        left = deadline - loop.time()
        if left <= 0:
            raise _timed_out(what, timeout_s, polls, value)
        await asyncio.sleep(min(interval_s, left))
