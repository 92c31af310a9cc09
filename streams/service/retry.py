"""One retry policy for every process (worker, collector, trainer, simulated panel): a broker or
Redis call that fails is tried again after an exponential backoff with full jitter, for as long
as its target has been unreachable less than the outage budget; then the error becomes
`InfrastructureError`, and the process exits with that one line. The classify path exits without
committing, so its batch is redelivered (at-least-once).

`RetryPolicy` decides (pure: the random draw is an argument); `Retrying` runs a call under it,
reporting every failure to the process's `Outages` (one log line per outage interval, not per
attempt) and counting it in ``borderline_infrastructure_retries_total``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from streams.service.metrics import Metrics
from streams.service.outage import InfrastructureError, Outages, target_names
from streams.wire.security import redis_options
from streams.wire.settings import RedisSettings, ResilienceSettings, Settings

__all__ = [
    "InfrastructureError",
    "RetryPolicy",
    "Retrying",
    "any_error",
    "is_infrastructure",
    "open_redis",
]

T = TypeVar("T")


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the broker or Redis failing: any Redis or Kafka
    error, a socket error or a timeout, as opposed to a bug or bad data. An
    `InfrastructureError` is not: its budget is already spent.

    >>> is_infrastructure(ConnectionRefusedError()), is_infrastructure(ValueError("bad"))
    (True, False)
    >>> wrapped = RuntimeError("send failed")
    >>> wrapped.__cause__ = TimeoutError()
    >>> is_infrastructure(wrapped)  # e.g. faust's ProducerSendError around a KafkaError
    True
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, InfrastructureError):
            return False
        if isinstance(current, RedisError | KafkaError | OSError | TimeoutError):
            return True
        current, seen = current.__cause__, seen + 1
    return False


def any_error(exc: BaseException) -> bool:
    """Retry whatever failed (a periodic task's body, which must never end the process alone)."""
    return not isinstance(exc, InfrastructureError)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by an outage budget: after the n-th failure
    wait ``draw * min(max_s, base_s * 2**(n-1))`` (``draw`` uniform in [0, 1)), and give up once
    the target has been unreachable ``budget_s``. ``attempts`` optionally caps the tries of one
    call as well; ``attempt_timeout_s`` bounds one try (a stalled server answers nothing).

    >>> p = RetryPolicy(budget_s=60, base_s=0.2, max_s=5)
    >>> p.delay(failures=1, draw=0.5), p.delay(failures=4, draw=1.0), p.delay(failures=40, draw=1.0)
    (0.1, 1.6, 5.0)
    >>> p.gives_up(down_s=59.9, failures=500), p.gives_up(down_s=60.0, failures=1)
    (False, True)
    >>> RetryPolicy(attempts=3).gives_up(down_s=0.5, failures=3)
    True
    """

    budget_s: float = 60.0
    base_s: float = 0.2
    max_s: float = 5.0
    attempt_timeout_s: float | None = None
    attempts: int | None = None

    @classmethod
    def from_settings(cls, settings: ResilienceSettings, *, timed: bool = True) -> RetryPolicy:
        """The configured policy; ``timed`` bounds each try by ``call_timeout_s``."""
        return cls(
            budget_s=settings.outage_budget_s,
            base_s=settings.backoff_base_s,
            max_s=settings.backoff_max_s,
            attempt_timeout_s=settings.call_timeout_s if timed else None,
        )

    def delay(self, failures: int, draw: float) -> float:
        """The wait after the ``failures``-th failure in a row, for a uniform ``draw``."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(max(failures - 1, 0), 60))
        return draw * ceiling

    def gives_up(self, *, down_s: float, failures: int) -> bool:
        """True once the target has been unreachable for the budget (or the attempts are used)."""
        if down_s >= self.budget_s:
            return True
        return self.attempts is not None and failures >= self.attempts


class Retrying:
    """Runs calls under a `RetryPolicy`, reporting to one `Outages` per process. ``rng`` draws the
    jitter: a private generator by default, so processes do not retry in step; tests pass a
    seeded one, and a fake ``sleep`` and clock (the clock is the outages')."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        outages: Outages | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self.outages = outages or Outages()
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.sleep = sleep

    @classmethod
    def for_process(
        cls, settings: Settings, *, metrics: Metrics | None = None, timed: bool = True
    ) -> Retrying:
        """A process's one policy, from its settings, reporting to one record of its outages
        that names the broker and Redis by address (see `RetryPolicy.from_settings`)."""
        resilience = settings.resilience
        return cls(
            RetryPolicy.from_settings(resilience, timed=timed),
            outages=Outages(log_every_s=resilience.log_interval_s, names=target_names(settings)),
            metrics=metrics,
        )

    async def __call__(
        self,
        target: str,
        operation: Callable[[], Awaitable[T]],
        *,
        retry_on: Callable[[BaseException], bool] = is_infrastructure,
        attempt_timeout_s: float | None = None,
    ) -> T:
        """Run ``operation`` until it succeeds; an error ``retry_on`` refuses is raised at once;
        `InfrastructureError` when the budget is spent. ``attempt_timeout_s`` replaces the
        policy's for a call that may take longer when all is well (joining a consumer group)."""
        clock = self.outages.clock
        timeout_s = attempt_timeout_s or self.policy.attempt_timeout_s
        failures = 0
        first: float | None = None
        while True:
            started = clock()
            spent = max(
                self.outages.down_for(target) or 0.0, 0.0 if first is None else started - first
            )
            try:
                result = await self._attempt(operation, timeout_s, self.policy.budget_s - spent)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not retry_on(exc):
                    raise
                failures += 1
                first = started if first is None else first
                down = max(self.outages.failed(target, exc, since=started), clock() - first)
                if self.policy.gives_up(down_s=down, failures=failures):
                    raise self.outages.error(target, self.policy.budget_s) from exc
                self._count(target)
                left = self.policy.budget_s - down
                await self.sleep(min(self.policy.delay(failures, self.rng.random()), left))
            else:
                self.outages.succeeded(target)
                return result

    @staticmethod
    async def _attempt(
        operation: Callable[[], Awaitable[T]], timeout_s: float | None, left_s: float
    ) -> T:
        """One try, cut at the attempt timeout, or sooner when less of the budget is left."""
        if timeout_s is None:
            return await operation()
        async with asyncio.timeout(max(0.05, min(timeout_s, left_s))):
            return await operation()

    def _count(self, target: str) -> None:
        if self.metrics is not None:
            self.metrics.retries.labels(target=target).inc()

    def failed(self, target: str, exc: BaseException, *, since: float | None = None) -> None:
        """For a loop that keeps its own pace (the control plane's poll): one failure, counted
        and reported; `InfrastructureError` when the target outlasted the budget."""
        if self.outages.failed(target, exc, since=since) >= self.policy.budget_s:
            raise self.outages.error(target, self.policy.budget_s) from exc
        self._count(target)

    def succeeded(self, target: str) -> None:
        self.outages.succeeded(target)


def open_redis(redis: RedisSettings, *, socket_timeout_s: float = 5.0) -> Redis:
    """A process's Redis client, over TLS with a password when the settings say so
    (`streams.wire.security.redis_options`). redis-py retries a failed command itself (ten
    times, in version 8); here it reconnects once at once (a dropped idle connection) and leaves
    the rest to the one policy above, and a stalled server times out instead of holding a call."""
    assert redis.url is not None, "open_redis needs a resolved Redis URL"
    return Redis.from_url(
        redis.url.get_secret_value(),
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 1),
        **redis_options(redis),
    )
