"""The faust app, built by a factory (nothing is configured at import time), and its classify
agent: take a batch of raw records, hand it to `Classifier.handle`, and let faust ack the batch
only after every output was delivered. Values are read as raw bytes and decoded inside the
classifier, so a bad message becomes a dead letter instead of crashing the agent.

Any failure that is not about the data (broker or Redis down past the outage budget, a bug) is
fatal: the process exits at once without committing, and a supervisor restarts it
(at-least-once). Background tasks and timers are guarded the same way, and a timer's errors are
retried under the retry policy first (`add_periodic`), so a stall never ends a process by itself.
SIGTERM stops a process within `STOP_WITHIN_S`, offsets committed when the broker answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.service.commits import member_commits_only
from streams.service.outage import InfrastructureError, ThrottledLogs
from streams.service.outbox import RawRecord
from streams.service.retry import Retrying, any_error
from streams.wire.security import KafkaSecurity
from streams.wire.settings import Settings

__all__ = [
    "FINISH_BATCH_S",
    "STOP_WITHIN_S",
    "BatchHandler",
    "FaustSink",
    "FencedConsumer",
    "ReadOffsets",
    "add_batch_agent",
    "add_guarded_task",
    "add_periodic",
    "add_topic_check",
    "exit_now",
    "forget_positions",
    "make_app",
    "run_app",
    "seek_to_committed_or_start",
    "take_ahead",
]

log = logging.getLogger(__name__)

EXIT_FATAL = 70
STOP_WITHIN_S = 9.0
"""SIGTERM to exit at most: a stop that waits on a broker that does not answer is cut short."""
FINISH_BATCH_S = 5.0
"""How long a batch in flight at shutdown may take to be delivered before it is given up."""
CONSUMER_STOP_S = 3.0
"""How long the consumer thread may take to stop (mode waits 60 s for a thread that crashed)."""
CONSUMER_METADATA_MAX_AGE_S = 5.0
"""How often the consumer reads its topics' partitions again (faust's default: 5 minutes). A
group rebalances when a topic's partition count changes, but only once its metadata shows it:
a topic that a client's request re-made on a restarted memory broker gets the broker's default
partitions (tansu: 4), and a consumer whose one refresh failed while the broker was down went
on reading the 2 it knew for 5 minutes (README, "Broker restarts")."""


def exit_now(exc: BaseException) -> None:
    """The default fatal handler: log loudly and leave without committing offsets. A spent
    outage budget is one line (what was unreachable, for how long); anything else, a traceback."""
    if isinstance(exc, InfrastructureError):
        log.critical("%s: exiting without commit, so nothing is lost", exc)
    else:
        log.critical(
            "fatal error, exiting without commit so nothing is lost: %r", exc, exc_info=exc
        )
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_FATAL)


class FaustSink:
    """`Sink` over the faust producer; ``send`` returns the delivery future."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._topics: dict[str, Any] = {}

    async def send(self, topic: str, key: bytes, value: bytes) -> Awaitable[object]:
        channel = self._topics.get(topic)
        if channel is None:
            channel = self.app.topic(topic, key_serializer="raw", value_serializer="raw")
            self._topics[topic] = channel
        fut: Awaitable[object] = await channel.send(key=key, value=value, force=True)
        return fut


async def seek_to_committed_or_start(consumer: Any) -> dict[Any, int | None]:
    """Seek an aiokafka consumer's assigned partitions to their committed offsets, and to their
    start those with nothing committed or with a commit past the partition's end; return the
    offsets read from (None: the start), which faust takes as its read positions.

    faust drops the records a fetch returns during a rebalance and seeks back to the committed
    offsets to read them again, but aiokafka's seek leaves a partition with nothing committed
    where it is, past the records dropped. After a broker lost its storage nothing is committed,
    and a worker lost every item that arrived during its rejoin (`forget_positions`). Worse, a
    process that did not notice the loss commits its old offsets into the new log, hundreds past
    its end; tansu then answers fetches there with nothing (no out-of-range error, so no reset):
    `bench chaos` lost 349 and 546 items that way, whole partitions after the broker restart. A
    partition's start is where the group's ``earliest`` reset puts a group without a commit or
    with one out of range; what was read and not committed is read again (at-least-once)."""
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    ends: dict[Any, int] = await consumer.end_offsets(list(committed)) if committed else {}
    stale = {
        tp: offset for tp, offset in committed.items() if offset and offset > ends.get(tp, offset)
    }
    if stale:
        log.warning(
            "committed offsets past the end of their partitions (a broker lost its log?): %s; "
            "reading them from the start",
            ", ".join(
                f"{tp.topic}[{tp.partition}] {o} > end {ends[tp]}" for tp, o in stale.items()
            ),
        )
    start = [tp for tp, offset in committed.items() if not offset or offset < 0 or tp in stale]
    if start:
        await consumer.seek_to_beginning(*start)
    return {tp: None if tp in start else offset for tp, offset in committed.items()}


class ReadOffsets(defaultdict):
    """faust's read offsets (the last offset read per partition; a record below it is dropped
    as a redelivery) that one stale record cannot move: ``fence(tp, offset)`` makes the very
    next set a no-op when it is that record's (see `FencedConsumer`).

    >>> offsets = ReadOffsets()
    >>> offsets["tp"] = 45
    >>> offsets.fence("tp", 804)
    >>> offsets["tp"] = 804  # the stale record's: not set
    >>> offsets["tp"] = 46  # the next: set
    >>> offsets["tp"], offsets["other"]
    (46, None)
    """

    def __init__(self) -> None:
        super().__init__(lambda: None)
        self._fence: tuple[Any, Any] | None = None

    def fence(self, tp: Any, offset: int) -> None:
        self._fence = (tp, offset)

    def __setitem__(self, tp: Any, offset: Any) -> None:
        fence, self._fence = self._fence, None
        if fence != (tp, offset):
            super().__setitem__(tp, offset)


class FencedConsumer:
    """A faust consumer that knows the records it fetched before its last seek back.

    faust stamps each record with the group's generation, and its streams skip a record of an
    older one. A broker that lost its state (the embedded memory tansu, restarted) starts the
    generations at 0 again, so a record fetched before the restart looked current: decided and
    acknowledged after the rebalance had forgotten the partition's offsets, it was committed as
    the old log's offset into the new log (the next owner read nothing below it: `bench
    chaos` lost whole partitions), and its read offset, set once the record was queued, moved
    the new position back to the old log's (the new log's first records were dropped as
    redeliveries: 52 to 73 of 100 items in `test_broker_restart`). Here every revocation, every
    assignment and every `forget_positions` starts an epoch of the process's own (negative:
    never a broker's generation). A record of an older epoch is skipped by the stream, its
    acknowledgement counts for nothing and its read offset is not set: it is read again from
    the commit."""

    app: Any
    callback: Any
    _read_offset: Any
    _unacked_messages: Any

    def fence_stale_records(self) -> None:
        self._epoch = 0
        offsets = self._read_offset = ReadOffsets()
        deliver = self.callback

        async def fenced(message: Any) -> None:
            await deliver(message)
            if self.stale(message):
                offsets.fence(message.tp, message.offset)

        self.callback = fenced

    def new_epoch(self) -> int:
        """Start an epoch: what was fetched before is stale."""
        self._epoch -= 1
        self.app.consumer_generation_id = self._epoch
        return self._epoch

    def stale(self, message: Any) -> bool:
        return bool(message.generation_id != self.app.consumer_generation_id)

    def ack(self, message: Any) -> bool:
        if self.stale(message):
            message.acked = True
            self._unacked_messages.discard(message)
            return False
        done: bool = super().ack(message)  # type: ignore[misc]
        return done


def _transport_with_fetch_wait(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """faust's aiokafka driver fixes fetch_max_wait_ms at 1500. A broker may hold a fetch that
    long before answering (tansu does, even with data waiting: measured p50 0.39 s at 1500 ms,
    0.002 s at 100 ms), which sets a floor under decision latency; so the wait is a setting.
    Its seek back to the committed offsets starts a partition with none, or with one past the
    partition's end, from its start (`seek_to_committed_or_start`), and it commits only as a
    member of the group, for the assignment it holds (`member_commits_only`)."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        shutdown_timeout = CONSUMER_STOP_S

        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by the Fetcher at start()
            return consumer

        async def on_start(self) -> None:
            await super().on_start()
            member_commits_only(self._ensure_consumer())  # no old offsets into a new group

        async def seek_to_committed(self) -> Any:
            return await self.call_thread(seek_to_committed_or_start, self._ensure_consumer())

        async def on_partitions_revoked(self, revoked: Any) -> None:
            self.consumer.new_epoch()  # type: ignore[attr-defined]
            await super().on_partitions_revoked(revoked)

        async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
            epoch = self.consumer.new_epoch()  # type: ignore[attr-defined]
            await super().on_partitions_assigned(assigned, epoch)

    class FetchWaitConsumer(FencedConsumer, faust_aiokafka.Consumer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fence_stale_records()

        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = FetchWaitConsumer

    return Transport


class _App(faust.App):
    transport_class: type[faust_aiokafka.Transport] = faust_aiokafka.Transport

    def _new_transport(self) -> Any:
        return self.transport_class(self.conf.broker_consumer, self)


class BatchHandler(Protocol):
    async def handle(self, records: Sequence[RawRecord]) -> object: ...


def make_app(settings: Settings, *, app_id: str) -> faust.App:
    """A faust app on the configured broker: raw bytes in and out, topics never declared (they
    are created with their partitions before workers join). Its consumer lag is read from the
    broker by `streams.service.progress.GroupLag`."""
    kafka = settings.kafka
    assert kafka.bootstrap_servers, "make_app needs resolved bootstrap servers"
    web_port = settings.worker.web_port
    app = _App(
        app_id,
        broker=[f"kafka://{h.strip()}" for h in kafka.bootstrap_servers.split(",")],
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=False,  # `borderline topics create` made them, with their partitions
        topic_disable_leader=True,
        topic_partitions=kafka.partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=kafka.session_timeout_s,
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_credentials=KafkaSecurity.of(kafka).faust_credentials(),  # TLS, SASL (Security)
        consumer_metadata_max_age_ms=int(CONSUMER_METADATA_MAX_AGE_S * 1000),
        # a delivery the broker does not take expires with the retry policy's attempt, instead
        # of after faust's 20 minutes
        producer_request_timeout=settings.resilience.call_timeout_s,
        web_enabled=web_port > 0,
        web_port=web_port or 6066,
        web_host="127.0.0.1",
        autodiscover=False,
    )
    app.transport_class = _transport_with_fetch_wait(int(kafka.fetch_max_wait_s * 1000))
    return app


def add_guarded_task(
    app: faust.App,
    body: Callable[[], Awaitable[None]],
    *,
    on_fatal: Callable[[BaseException], None] = exit_now,
) -> None:
    """Run ``body`` as a task of the app; should it ever raise (its own retries spent), the
    process exits (``on_fatal``) instead of faust crashing the app with a traceback."""

    async def guarded() -> None:
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            on_fatal(exc)

    guarded.__qualname__ = guarded.__name__ = getattr(body, "__name__", "guarded")
    app.task(guarded)


def add_periodic(
    app: faust.App,
    body: Callable[[], Awaitable[None]],
    *,
    interval_s: float,
    name: str,
    retry: Retrying,
    target: str,
    on_fatal: Callable[[BaseException], None] = exit_now,
) -> None:
    """A timer whose body rides out an outage: any error in it is retried under the process's
    retry policy, reported against ``target``, logged once per interval; only a spent outage
    budget ends the process (``on_fatal``). The body must be safe to run again."""

    async def tick() -> None:
        try:
            await retry(target, body, retry_on=any_error)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            on_fatal(exc)

    app.timer(interval_s, name=name)(tick)


def add_topic_check(
    app: faust.App,
    check: Callable[[], Awaitable[None]],
    *,
    interval_s: float,
    retry: Retrying,
    on_fatal: Callable[[BaseException], None] = exit_now,
) -> None:
    """Run ``check`` (a `streams.service.topic_watch.TopicWatch`) every ``interval_s`` against
    the broker: topics a restarted broker lost are made again before the next outputs go out.
    A broker that does not answer is an outage of ``kafka`` like any other (see `add_periodic`)."""
    add_periodic(
        app,
        check,
        interval_s=interval_s,
        name="topic_check",
        retry=retry,
        target="kafka",
        on_fatal=on_fatal,
    )


async def forget_positions(app: faust.App) -> None:
    """After a broker restart (topics found gone), read every assigned partition from 0 again.

    faust keeps each partition's last read offset in memory and drops any message below it
    (a redelivery, it assumes); a restarted memory broker starts every partition at 0 again, so
    without this a worker would skip as many new items as it had read before. Its partitions are
    sought to 0 and their acked and committed offsets forgotten. On a broker that lost a topic
    without restarting, this re-reads what it still holds: duplicates (at-least-once), no loss."""
    consumer: Any = app.consumer
    if isinstance(consumer, FencedConsumer):
        consumer.new_epoch()  # what was fetched from the lost log is not decided or acked
    assigned = sorted(consumer.assignment())
    for tp in assigned:
        for table in (consumer._acked, consumer._acked_index, consumer._gap):
            table.pop(tp, None)
        consumer._committed_offset.pop(tp, None)
        await consumer.seek(tp, 0)  # also forgets the read offset
    log.warning("read positions of %d partitions forgotten: reading from 0", len(assigned))


class Worker(faust.Worker):
    """faust's worker, whose log handlers say a repeated warning once per ``log_every_s``, and
    whose stop on SIGTERM or Ctrl-C never takes longer than `STOP_WITHIN_S`: past it, the
    process exits without waiting (what was not committed is redelivered)."""

    log_every_s = 10.0
    _stop_deadline: threading.Timer | None = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        ThrottledLogs.install(self.log_every_s, logger)

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = threading.Timer(STOP_WITHIN_S, _stop_overdue)
            self._stop_deadline.daemon = True
            self._stop_deadline.start()
        super()._schedule_shutdown(sig)


def _stop_overdue() -> None:
    log.critical(
        "stop not finished after %g s (the broker or Redis does not answer): exiting without "
        "the last commit; uncommitted batches are redelivered",
        STOP_WITHIN_S,
    )
    logging.shutdown()
    os._exit(EXIT_FATAL)


def run_app(
    app: faust.App, loop: asyncio.AbstractEventLoop, *, loglevel: str, log_every_s: float
) -> None:
    """Run ``app`` as a faust worker until stopped (see `Worker`)."""
    worker = Worker(app, loop=loop, loglevel=loglevel, quiet=True)
    worker.log_every_s = log_every_s
    worker.execute_from_commandline()


def add_batch_agent(
    app: faust.App,
    *,
    topic: str,
    name: str,
    handler: BatchHandler,
    batch_max: int,
    batch_wait_s: float,
    on_fatal: Callable[[BaseException], None] = exit_now,
    finish_within_s: float = FINISH_BATCH_S,
    peek: Callable[[object], None] | None = None,
) -> None:
    """Consume ``topic`` in batches of raw records (`take_ahead`: the next batch is read while
    one is handled); a batch is acked only after ``handler`` returned (every output delivered).
    Anything the handler raises is fatal (see module doc); so is a batch in flight at shutdown
    that is not delivered within ``finish_within_s``. ``peek`` sees each record's value as it is
    read into the next batch, while the batch in flight is handled
    (`streams.service.classify.TokeniseAhead`); what it raises is logged and ignored: it never
    holds or drops a record."""
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")

    def peeked(value: object) -> object:
        assert peek is not None
        try:
            peek(value)
        except Exception:
            log.debug("peek at a %s record failed", topic, exc_info=True)
        return value

    @app.agent(source, name=name, concurrency=1)
    async def agent(stream: faust.StreamT) -> None:
        assert isinstance(stream, faust.Stream)  # what take_ahead drives, not StreamT
        async for events in take_ahead(
            stream, batch_max, batch_wait_s, peeked if peek is not None else None
        ):
            records = [
                RawRecord(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                )
                for e in events
            ]
            task = asyncio.ensure_future(handler.handle(records))
            try:
                # shielded: a shutdown mid-batch still delivers the batch before faust acks it
                await asyncio.shield(task)
            except asyncio.CancelledError:
                try:
                    await asyncio.wait_for(task, timeout=finish_within_s)
                except BaseException as exc:
                    on_fatal(exc)
                raise
            except BaseException as exc:
                on_fatal(exc)
                raise


async def take_ahead(
    stream: faust.Stream,
    batch_max: int,
    within: float,
    peek: Callable[[Any], object] | None = None,
) -> AsyncIterator[list[Any]]:
    """Batches of at most ``batch_max`` events, like faust's `take_events`, except that the next
    batch is read while the current one is handled: faust's own holds the stream for the whole
    of a batch (its buffer waits on the batch being consumed), so whatever looks at records as
    they arrive (``peek``: the worker tokenises them) saw one record of the next batch, not the
    batch. Here the stream goes on into a second buffer of at most ``batch_max`` events, and
    stops there until a batch is taken out of it.

    Acknowledgement is unchanged: an event is acked only after the loop body that received its
    batch returned (every output delivered), in the order read, and events read ahead are not
    acked before their own batch is handled; at most 2 x ``batch_max`` events are held unacked
    (a crash redelivers them from the commit). A batch is handed out once it is full or once
    its oldest event has waited ``within`` seconds."""
    loop = asyncio.get_running_loop()
    pending: list[Any] = []
    first_at = 0.0  # when pending's oldest event arrived
    full = asyncio.Event()  # pending holds a whole batch
    room = asyncio.Event()  # pending has room for another event
    room.set()

    async def add(value: Any) -> Any:
        nonlocal first_at
        while len(pending) >= batch_max:
            room.clear()
            await stream.wait(room)  # type: ignore[arg-type]  # returns early on stop
            if stream.should_stop:
                return value
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_ahead found no current event")
        if not pending:
            first_at = loop.time()
        pending.append(event)
        if peek is not None:
            peek(value)
        if len(pending) >= batch_max:
            full.set()
        return value

    acks = stream.enable_acks
    stream.enable_acks = False  # acked here, after each batch is handled
    stream.add_processor(add)
    stream._enable_passive(cast(Any, aiter(stream.channel)))
    try:
        while not stream.should_stop:
            if not full.is_set():
                wait = within - (loop.time() - first_at) if pending else within
                await stream.wait_for_stopped(full, timeout=max(wait, 0.0))  # type: ignore[arg-type]
            if not pending:
                continue
            batch = pending[:batch_max]
            del pending[:batch_max]
            full.clear()
            room.set()
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add)
