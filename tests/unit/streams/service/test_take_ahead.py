"""`take_ahead`, the worker's own batching: the next batch is read (and peeked at) while the
current one is handled, every event is acked only after its own batch was handled, in order, and
at most one batch is held ahead. Driven through faust's agent test context (a real faust stream,
no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import faust

from streams.service.app import take_ahead

Batches = Callable[
    [faust.Stream, int, float, Callable[[Any], object]], AsyncIterator[Sequence[Any]]
]


def _faust_take_events(
    stream: faust.Stream, batch_max: int, within: float, peek: Callable[[Any], object]
) -> AsyncIterator[Sequence[Any]]:
    """faust's own batching with the peek as a stream processor (what the worker did before)."""

    def peeked(value: Any) -> Any:
        peek(value)
        return value

    stream.add_processor(peeked)
    return stream.take_events(batch_max, within=within)


async def _run(
    batches: Batches, *, items: int, batch_max: int, handle_s: float, within: float = 0.05
) -> list[dict[str, Any]]:
    """Put ``items`` values through an agent that batches with ``batches`` and spends
    ``handle_s`` on each batch; what each batch saw, as it started and as it ended."""
    app = faust.App(f"take-ahead-{id(batches)}-{items}", store="memory://")
    topic = app.topic("items", value_serializer="raw")
    peeked: list[bytes] = []
    seen: list[dict[str, Any]] = []
    handed: list[Any] = []

    @app.agent(topic)
    async def agent(stream: faust.StreamT) -> None:
        assert isinstance(stream, faust.Stream)
        async for batch in batches(stream, batch_max, within, peeked.append):
            before = list(handed)
            seen.append(
                {
                    "values": [e.value for e in batch],
                    "acked_at_start": [e.message.acked for e in batch],
                    "earlier_all_acked": all(e.message.acked for e in before),
                    "peeked_at_start": len(peeked),
                }
            )
            handed.extend(batch)
            await asyncio.sleep(handle_s)
            seen[-1]["peeked_at_end"] = len(peeked)

    async with agent.test_context() as running:
        for k in range(items):
            await running.put(b"%d" % k)
        for _ in range(200):
            if sum(len(s["values"]) for s in seen) == items and all(
                e.message.acked for e in handed
            ):
                break
            await asyncio.sleep(0.02)
    return seen


def test_the_next_batch_is_read_while_the_current_one_is_handled() -> None:
    seen = asyncio.run(_run(take_ahead, items=12, batch_max=4, handle_s=0.15))
    assert [s["values"] for s in seen] == [
        [b"0", b"1", b"2", b"3"],
        [b"4", b"5", b"6", b"7"],
        [b"8", b"9", b"10", b"11"],
    ]
    # while batch 1 is handled, all of batch 2 arrives and is peeked at; then batch 3
    assert [s["peeked_at_end"] for s in seen] == [8, 12, 12]


def test_faust_take_events_holds_the_stream_while_a_batch_is_handled() -> None:
    """Why `take_ahead` exists: under faust's own, nothing of the next batch is read while a full
    batch is handled (the full buffer waits on its batch being consumed)."""
    seen = asyncio.run(_run(_faust_take_events, items=12, batch_max=4, handle_s=0.15))
    assert seen[0]["peeked_at_end"] == 4


def test_events_are_acked_only_after_their_own_batch_was_handled() -> None:
    seen = asyncio.run(_run(take_ahead, items=10, batch_max=4, handle_s=0.05))
    assert [len(s["values"]) for s in seen] == [4, 4, 2]  # the last, partial, after `within`
    for s in seen:
        assert s["acked_at_start"] == [False] * len(s["values"])  # read ahead, not yet acked
        assert s["earlier_all_acked"]


def test_at_most_one_batch_is_held_ahead_of_a_slow_handler() -> None:
    seen = asyncio.run(_run(take_ahead, items=20, batch_max=4, handle_s=0.1))
    for k, s in enumerate(seen):
        handed = sum(len(x["values"]) for x in seen[: k + 1])
        assert s["peeked_at_end"] <= handed + 4
