"""Per-test isolation on the shared real services: each test gets its own topic names, consumer
group and Redis key prefix, and starts real `borderline worker` processes against them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams.settings import Settings
from streams.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    worker_id: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "[^Worker]: Ready" in text:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.worker_id} exited early:\n{text[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker {self.worker_id} not ready after {timeout_s}s")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


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

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
        env.update(
            {
                "BORDERLINE_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
                "BORDERLINE_REDIS__URL": self.redis_url,
                "BORDERLINE_KAFKA__APP_ID": f"classify-{self.tag}",
                "BORDERLINE_KAFKA__PARTITIONS": str(self.partitions),
                "BORDERLINE_REDIS__KEY_PREFIX": f"test-{self.tag}",
                "BORDERLINE_MODEL__DIR": str(self.model_dir),
                "BORDERLINE_WORKER__SCORER_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for name, value in self.topics.model_dump().items():
            env[f"BORDERLINE_KAFKA__TOPICS__{name.upper()}"] = value
        env.update(extra)
        return env

    def settings(self) -> Settings:
        return Settings.model_validate(
            {
                "kafka": {
                    "bootstrap_servers": self.bootstrap_servers,
                    "topics": self.topics.model_dump(),
                    "partitions": self.partitions,
                },
                "redis": {"url": self.redis_url, "key_prefix": f"test-{self.tag}"},
            }
        )

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.bootstrap_servers, self.topics.all(), self.partitions))

    def start_worker(self, name: str, *, wait: bool = True, **extra_env: str) -> WorkerProcess:
        port = free_port()
        log = self.tmp / f"{name}.log"
        worker_id = f"{name}-{self.tag}"
        env = self.env(BORDERLINE_METRICS__PORT=str(port), **extra_env)
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--id", worker_id],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = WorkerProcess(worker_id, process, log, port)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def run_cli(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


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
        for worker in s.workers:
            worker.stop(signal.SIGTERM, timeout_s=15)
