"""Retrying infrastructure calls (broker, Redis) with exponential backoff. When the attempts are
spent the error becomes `InfrastructureError`, which the worker treats as fatal: it stops loudly
without committing, so a supervisor restarts it and nothing is lost (at-least-once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from models.errors import BorderlineError
from streams.service.metrics import Metrics

__all__ = ["InfrastructureError", "Retrying", "retry"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class InfrastructureError(BorderlineError):
    """The broker or Redis stayed unavailable through every retry."""


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    target: str,
    attempts: int,
    backoff_s: float,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """Run ``operation`` until it succeeds, at most ``attempts`` times, doubling the wait."""
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if attempt == attempts:
                raise InfrastructureError(
                    f"{target} failed {attempts} times, last error: {exc!r}"
                ) from exc
            log.warning("%s failed (attempt %d/%d): %r; retrying", target, attempt, attempts, exc)
            if on_retry is not None:
                on_retry(target)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


class Retrying:
    """`retry` with a handler's settings bound, counting every retry in the metrics."""

    def __init__(self, *, attempts: int, backoff_s: float, metrics: Metrics) -> None:
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.metrics = metrics

    async def __call__(self, target: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await retry(
            operation,
            target=target,
            attempts=self.attempts,
            backoff_s=self.backoff_s,
            on_retry=lambda t: self.metrics.retries.labels(target=t).inc(),
        )
