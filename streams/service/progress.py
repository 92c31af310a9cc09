"""How a consumer process keeps its `Progress` (`streams.service.health`) and its lag gauge:
every batch its agent handled (`Tracked`), and its consumer group's committed offsets against
the end of each partition, read from the broker through aiokafka's public API (`GroupLag`: the
admin client's ``list_consumer_group_offsets``, a group-less consumer's ``end_offsets``), not
from faust's in-memory read positions: what the broker holds is what a restart resumes from.

The embedded broker (tansu) answers a partition's end offset at the start of its last record
batch (README, known quirks), so there the lag of a partition whose last batch is unread reads
short by that batch's records less one (exact for one-record batches); Apache Kafka answers the
true end."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError
from prometheus_client import Gauge

from streams.service.app import BatchHandler
from streams.service.health import Progress
from streams.service.outbox import RawRecord
from streams.service.reader import partitions_of

__all__ = ["GroupLag", "LagGauge", "Tracked"]

log = logging.getLogger(__name__)


class LagGauge(Protocol):
    """Where a process keeps ``borderline_consumer_lag_messages``: `Metrics` (the worker, the
    collector) or the console's `ConsoleMetrics`."""

    @property
    def consumer_lag(self) -> Gauge: ...


@dataclass
class Tracked:
    """A batch handler that notes each batch it handled in ``progress``."""

    inner: BatchHandler
    progress: Progress
    clock: Callable[[], float] = field(default=time.time)

    async def handle(self, records: Sequence[RawRecord]) -> object:
        out = await self.inner.handle(records)
        self.progress.handled(now=self.clock())
        return out


class GroupLag:
    """Reads the lag of consumer group ``group`` on ``topics`` from the broker; `poll` sets the
    gauge (labelled by group, topic and partition) and the progress (lag, last commit)."""

    def __init__(
        self,
        bootstrap_servers: str,
        group: str,
        topics: Sequence[str],
        *,
        metrics: LagGauge,
        progress: Progress,
        assigned: Callable[[], bool] = lambda: True,
        timeout_s: float = 10.0,
        client_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.topics = list(topics)
        self.metrics = metrics
        self.progress = progress
        self.assigned = assigned
        self.timeout_ms = int(timeout_s * 1000)
        self.options = dict(client_options or {})  # security (`KafkaSecurity.options`)
        self.clock = clock
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._committed_total: int | None = None
        self._failing = False

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                request_timeout_ms=self.timeout_ms,
                **self.options,
            )
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                request_timeout_ms=self.timeout_ms,
                **self.options,
            )
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                await self._close(admin, consumer)
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    @staticmethod
    async def _close(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
        for close in (admin.close, consumer.stop):
            with contextlib.suppress(Exception):  # closing after a failure: nothing to save
                await close()

    async def close(self) -> None:
        if self._admin is not None and self._consumer is not None:
            await self._close(self._admin, self._consumer)
        self._admin = self._consumer = None

    async def lag(self) -> dict[TopicPartition, int]:
        """Each partition's lag: its end offset less the group's committed offset (or less the
        log start when the group committed nothing there)."""
        admin, consumer = await self._clients()
        partitions = await partitions_of(consumer, self.topics)
        if not partitions:
            return {}
        committed = await admin.list_consumer_group_offsets(self.group, partitions=partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        self._note_commits(sum(max(0, c.offset) for c in committed.values()))
        out = {}
        for tp in partitions:
            at = committed.get(tp)
            position = max(at.offset if at is not None else -1, starts[tp])
            out[tp] = max(0, ends[tp] - position)
        return out

    def _note_commits(self, total: int) -> None:
        if self._committed_total is not None and total > self._committed_total:
            self.progress.committed(now=self.clock())
        self._committed_total = total

    async def poll(self) -> None:
        """One reading into the gauge and the progress; a failure is logged once until a reading
        succeeds again, and the next poll tries again with fresh clients (a gauge is not worth a
        process: the watchdog and the retry policy decide about outages, and report a broker
        that cannot be reached, so that failure is said here below warning level)."""
        try:
            self.progress.assigned = self.assigned()
            lags = await self.lag()
        except Exception as exc:
            if not self._failing:
                unreachable = isinstance(exc, KafkaConnectionError | NodeNotReadyError | OSError)
                level = logging.INFO if unreachable else logging.WARNING
                log.log(level, "consumer lag of group %s not read: %r", self.group, exc)
            self._failing = True
            await self.close()
            return
        self._failing = False
        for tp, lag in lags.items():
            self.metrics.consumer_lag.labels(
                group=self.group, topic=tp.topic, partition=str(tp.partition)
            ).set(lag)
        self.progress.observe_lag(sum(lags.values()), now=self.clock())
