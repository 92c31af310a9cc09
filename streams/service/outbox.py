"""What every batch handler shares: turning a bad record into a dead letter (reason, original
bytes and key, where it came from), and delivering a batch's outputs, retried as one unit, before
the batch may be acked."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from streams.wire.errors import MessageError
from streams.wire.messages import DeadLetter, encode
from streams.wire.topics import DLQ_SUFFIX

__all__ = ["RawRecord", "Sink", "dead_letter", "dead_letter_output", "deliver"]


@dataclass(frozen=True)
class RawRecord:
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


class Sink(Protocol):
    """Where outputs go. ``send`` returns an awaitable that resolves once delivered."""

    async def send(self, topic: str, key: bytes, value: bytes) -> Awaitable[object]: ...


def dead_letter(record: RawRecord, error: MessageError, *, worker: str, now: float) -> DeadLetter:
    return DeadLetter.of(
        error,
        record.value or b"",
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        worker=worker,
        now=now,
    )


def dead_letter_output(letter: DeadLetter) -> tuple[str, bytes, bytes]:
    """The (topic, key, value) of a dead letter: ``<source>.dlq``, keyed as the original."""
    key = base64.b64decode(letter.key_b64) if letter.key_b64 else b""
    return letter.source_topic + DLQ_SUFFIX, key, encode(letter)


async def deliver(
    sink: Sink,
    outgoing: Sequence[tuple[str, bytes, bytes]],
    retry: Callable[[str, Callable[[], Awaitable[object]]], Awaitable[object]],
) -> None:
    """Send everything and wait until the broker has it; retried as a whole (at-least-once)."""
    if not outgoing:
        return

    async def send_all() -> None:
        pending = [await sink.send(t, k, v) for t, k, v in outgoing]
        await asyncio.gather(*pending)

    await retry("kafka", send_all)
