"""The topic watch of a long-running process: every few seconds it reads the cluster's metadata
(one request for every topic, which creates nothing) and re-creates any of the process's topics
that is gone, with their partitions, saying so once. A broker that keeps its topics in memory
(the embedded tansu, `memory://`) forgets them all when it restarts; without the watch a worker
would go on producing into topics that no longer exist (see README, "Running on these machines:
known quirks"). Run as a periodic under the process's retry policy (`add_topic_check`), so a
broker still down is an outage like any other."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence

from aiokafka import AIOKafkaClient

from streams.wire.security import PLAINTEXT, KafkaSecurity
from streams.wire.topics import ensure_topics

__all__ = ["TopicWatch", "missing_topics"]

log = logging.getLogger(__name__)

Ensure = Callable[[str, list[str], int, int], Awaitable[list[str]]]


def missing_topics(expected: Sequence[str], present: Collection[str]) -> list[str]:
    """The expected topics the broker does not report, in the expected order.

    >>> missing_topics(["items", "decisions", "items.dlq"], {"decisions"})
    ['items', 'items.dlq']
    >>> missing_topics(["items"], {"items", "other"})
    []
    """
    return [topic for topic in expected if topic not in present]


class TopicWatch:
    """Re-create the process's topics when the broker lost them. Call it periodically; it raises
    what the broker raises (the caller retries). ``ensure`` creates topics (`ensure_topics`)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        partitions: int,
        replication_factor: int = 1,
        *,
        timeout_s: float = 10.0,
        ensure: Ensure | None = None,
        security: KafkaSecurity = PLAINTEXT,
        on_recreated: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = list(topics)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.timeout_ms = int(timeout_s * 1000)
        self.ensure = ensure or functools.partial(ensure_topics, security=security)
        self.security = security
        self.on_recreated = on_recreated  # e.g. forget read positions on the restarted broker
        self.recreated = 0  # how many times topics were found gone and made again
        self._client: AIOKafkaClient | None = None

    async def present(self) -> set[str]:
        """The topics the broker reports now (one metadata request for all topics)."""
        if self._client is None:
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
            self._client = client
        cluster = await self._client.fetch_all_metadata()
        return set(cluster.topics())

    async def __call__(self) -> None:
        missing = missing_topics(self.topics, await self.present())
        if not missing:
            return
        log.warning(
            "%d of %d topics are gone (a broker restarted without its storage?): re-creating "
            "%s with %d partitions",
            len(missing),
            len(self.topics),
            ", ".join(missing),
            self.partitions,
        )
        await self.ensure(self.bootstrap_servers, missing, self.partitions, self.replication_factor)
        self.recreated += 1
        log.info("topics re-created: %s", ", ".join(missing))
        if self.on_recreated is not None:
            await self.on_recreated(missing)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
