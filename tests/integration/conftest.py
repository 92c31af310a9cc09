"""Per-test isolation on the shared real services: each test gets its own topic names, consumer
group and Redis key prefix, and starts real `borderline worker` processes against them (with the
same launcher the demo and the benchmarks use)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.offline.simulation import SimulatedReviewer
from adapters.registry.keys import ensure_key_pair
from streams.demo.panel import PanelStats, run_simulated_panel
from streams.embedded.launcher import WorkerProcess, free_port, start_worker
from streams.service.reader import read_topic
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics
from tests.redis_support import redis_client

from .helpers import reviewer_keys

__all__ = [
    "LOOP_PANEL",
    "LOOP_REVIEW",
    "LOOP_TRAINING",
    "TEST_KAFKA",
    "Stack",
    "free_port",
    "stop_all",
]

pytestmark = pytest.mark.integration

# The labelling loop of the adaptation tests: review without a budget to speak of (every item
# worth a label is requested at once) and three careful simulated reviewers answering in 0.1 s.
LOOP_PANEL = "alice:0.02:0.1,bob:0.03:0.1,carol:0.03:0.1"
LOOP_REVIEW: dict[str, Any] = {
    "labels_per_hour": 1e6,
    "max_open": 5000,
    "mine_every": 100,
    "audit_rate": 0.1,
    "min_shared": 8,
}
# The trainer's candidates in these tests aim at 300 examples seen in training, not the
# product's 800 (`candidate_epochs`): what is under test is that the loop closes (a candidate
# trained, gated, promoted or refused). It shortens small training sets only: 86 labels train 3
# epochs instead of 9 (test_gate); from about 230 labels on both sit at the 3-epoch floor.
LOOP_TRAINING: dict[str, Any] = {"train_examples": 300}
# The consumer-group timing of every process a test starts. The embedded broker holds a group's
# join for about half the session timeout (measured: 10 s -> 5.1 s, 4 s -> 2.1 s, 2 s -> 1.1 s),
# and every worker or collector start, join and leave pays it; 4 s still leaves four heartbeats
# (one a second) per session on a loaded machine.
TEST_KAFKA: dict[str, Any] = {"session_timeout_s": 4.0}


@dataclass
class Stack:
    """One test's view of the loop: its topics, group, key prefix and workers."""

    bootstrap_servers: str
    redis_url: str
    model_dir: Path
    tmp: Path
    tag: str
    topics: TopicNames
    partitions: int = 4
    workers: list[WorkerProcess] = field(default_factory=list)

    def settings(
        self,
        app_id: str | None = None,
        review: dict[str, Any] | None = None,
        drift: dict[str, Any] | None = None,
        gate: dict[str, Any] | None = None,
        **worker: Any,
    ) -> Settings:
        return Settings.model_validate(
            {
                "kafka": {
                    "bootstrap_servers": self.bootstrap_servers,
                    "topics": self.topics.model_dump(),
                    "partitions": self.partitions,
                    "app_id": app_id or f"classify-{self.tag}",
                    **TEST_KAFKA,
                },
                "redis": {"url": self.redis_url, "key_prefix": f"test-{self.tag}"},
                "model": {"dir": str(self.model_dir)},
                "worker": {"scorer_threads": 1, **worker},
                "review": review or {},
                "drift": drift or {},
                **({"gate": gate} if gate else {}),
                "adapters": self.adapter_keys(),
            }
        )

    def adapter_keys(self) -> dict[str, str]:
        """This test's adapter signing key pair: its trainers sign, its workers verify."""
        private, public = ensure_key_pair(self.tmp / "adapter-keys")
        return {"signing_key_file": str(private), "verify_key_file": str(public)}

    def simulated_panel(
        self,
        panel: Sequence[SimulatedReviewer],
        truth: Mapping[str, str],
        *,
        per_item: int,
        seed: int,
        stop: asyncio.Event,
        stats: PanelStats,
        **options: Any,
    ) -> Coroutine[Any, Any, PanelStats]:
        """The simulated expert panel on this test's topics: run it as a task, set `stop`. Its
        reviewers sign with their keys (``keys``; by default issued to them here)."""

        async def run(keys: Mapping[str, bytes] | None) -> PanelStats:
            if keys is None:
                async with redis_client(self.redis_url) as redis:
                    ids = [r.reviewer_id for r in panel]
                    keys = await reviewer_keys(redis, f"test-{self.tag}", ids, register=False)
            return await run_simulated_panel(
                self.bootstrap_servers,
                self.topics,
                panel,
                truth,
                keys=keys,
                per_item=per_item,
                seed=seed,
                stop=stop,
                stats=stats,
                **options,
            )

        return run(options.pop("keys", None))

    def read(
        self,
        topic: str,
        until: Callable[[list[dict[str, Any]]], bool],
        *,
        timeout_s: float = 120.0,
        idle_s: float | None = None,
    ) -> list[dict[str, Any]]:
        """Every message on ``topic`` from the start, until ``until(messages)`` holds (or the
        time is up, or with ``idle_s``, nothing new came for that long)."""
        return asyncio.run(
            read_topic(
                self.bootstrap_servers, topic, until=until, timeout_s=timeout_s, idle_s=idle_s
            )
        )

    def read_all(self, topic: str, *, timeout_s: float = 5.0, idle_s: float = 2.0) -> list[Any]:
        """Everything on ``topic`` so far: read until nothing new comes for ``idle_s``."""
        return self.read(topic, lambda _: False, timeout_s=timeout_s, idle_s=idle_s)

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.bootstrap_servers, self.topics.all(), self.partitions))

    def start_worker(
        self,
        name: str,
        *,
        wait: bool = True,
        app_id: str | None = None,
        review: dict[str, Any] | None = None,
        drift: dict[str, Any] | None = None,
        **worker: Any,
    ) -> WorkerProcess:
        process = start_worker(
            self.settings(
                app_id, review, drift, adapter_cache_dir=str(self.tmp / f"{name}-cache"), **worker
            ),
            f"{name}-{self.tag}",
            self.tmp / f"{name}.log",
            wait=wait,
        )
        self.workers.append(process)
        return process


@pytest.fixture(scope="session", autouse=True)
def working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The processes the tests start run in a temporary directory, not in the checkout: faust
    makes its data directory (``<app id>-data``, empty with a memory store) in the working
    directory, and the workers, collectors and trainers inherit this one."""
    previous = Path.cwd()
    here = tmp_path_factory.mktemp("cwd")
    os.chdir(here)
    try:
        yield here
    finally:
        os.chdir(previous)


@pytest.fixture
def stack(services: Any, model_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    s = Stack(
        bootstrap_servers=services.bootstrap_servers,
        redis_url=services.redis_url,
        model_dir=model_dir,
        tmp=tmp_path,
        tag=tag,
        topics=TopicNames().prefixed(f"t{tag}."),
    )
    s.create_topics()
    try:
        yield s
    finally:
        stop_all(s.workers, timeout_s=15)


def stop_all(workers: Sequence[WorkerProcess], *, timeout_s: float) -> None:
    """SIGTERM every process first, then wait for each: they shut down side by side (a faust
    worker takes 2-3 s to close; two workers: 5.5 s one by one, 2.8 s so), not in turn."""
    running = [w for w in workers if w.process.poll() is None]
    for worker in running:
        worker.process.send_signal(signal.SIGTERM)
    for worker in running:
        try:
            worker.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
