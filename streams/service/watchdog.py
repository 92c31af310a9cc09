"""The watchdog of a long-running process (a classify worker, the collector): every few seconds
it asks the broker for its metadata and Redis for a PONG, each through the process's retry
policy. A busy process notices an outage in its own calls; an idle one would not (faust's
consumer retries a lost broker forever, logging every attempt), so the watchdog is what makes
an idle process exit after the outage budget, like a busy one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiokafka import AIOKafkaClient
from redis.asyncio import Redis

from streams.service.retry import Retrying
from streams.wire.security import PLAINTEXT, KafkaSecurity
from streams.wire.settings import Settings

__all__ = ["BrokerProbe", "Watchdog", "probe_interval"]

Probe = Callable[[], Awaitable[object]]


def probe_interval(budget_s: float) -> float:
    """How often the targets are probed: every 5 s, or five times within a shorter budget.

    >>> probe_interval(60.0), probe_interval(5.0)
    (5.0, 1.0)
    """
    return min(5.0, budget_s / 5)


class Watchdog:
    """Probe each target (name -> an async call) every ``interval_s``, concurrently; a probe
    that fails is retried under ``retry``, so `run` raises `InfrastructureError` once a target
    outlasted the outage budget (the caller exits on it)."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        retry: Retrying,
        *,
        interval_s: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.probes = dict(probes)
        self.retry = retry
        self.interval_s = interval_s
        self.sleep = sleep

    @classmethod
    def for_services(cls, settings: Settings, redis: Redis, retry: Retrying) -> Watchdog:
        """The broker (a metadata request) and Redis (PING) of these settings, probed at the
        pace `probe_interval` sets for the outage budget."""
        assert settings.kafka.bootstrap_servers
        resilience = settings.resilience
        broker = BrokerProbe(
            settings.kafka.bootstrap_servers,
            timeout_s=resilience.call_timeout_s,
            security=KafkaSecurity.of(settings.kafka),
        )
        return cls(
            {"kafka": broker, "redis": redis.ping},
            retry,
            interval_s=probe_interval(resilience.outage_budget_s),
        )

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._watch(t, probe) for t, probe in self.probes.items()))
        finally:
            for probe in self.probes.values():
                if isinstance(probe, BrokerProbe):
                    await probe.close()

    async def _watch(self, target: str, probe: Probe) -> None:
        while True:
            await self.retry(target, probe)
            await self.sleep(self.interval_s)


class BrokerProbe:
    """A metadata request to the broker, over one client kept for it (made on first use, in
    the process's event loop; made again if it could not connect at all)."""

    def __init__(
        self, bootstrap_servers: str, *, timeout_s: float, security: KafkaSecurity = PLAINTEXT
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.security = security
        self.timeout_ms = int(timeout_s * 1000)
        self.client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        if self.client is not None:
            await self.client.fetch_all_metadata()
            return
        client = AIOKafkaClient(
            bootstrap_servers=self.bootstrap_servers,
            request_timeout_ms=self.timeout_ms,
            **self.security.options(),
        )
        try:
            await client.bootstrap()
        except BaseException:
            await client.close()
            raise
        self.client = client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
