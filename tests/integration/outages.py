"""Outages on demand for the outage tests: a private redis-server that one test may stop with
SIGSTOP (a stall: connections stay open, nothing answers) or kill without touching the session's
services, and the few reads those tests share (a process's log lines, the labels in a store)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from adapters.labels.store import LabelStore
from tests.redis_support import redis_server, with_redis

__all__ = [
    "PrivateRedis",
    "log_lines",
    "private_redis",
    "stored_labels",
    "troubled_lines",
    "wait_exit",
]


@dataclass(frozen=True)
class PrivateRedis:
    url: str
    pid: int

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """SIGSTOP for the duration of the block; SIGCONT however the block ends."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own (unix socket), with its process id."""
    directory.mkdir(parents=True, exist_ok=True)
    with redis_server(directory) as url:

        async def pid(redis: Redis) -> int:
            info = await redis.info("server")
            return int(info["process_id"])

        yield PrivateRedis(url, with_redis(url, pid))


def stored_labels(redis_url: str, prefix: str, policy: str) -> int:
    """How many (item, reviewer) labels the store holds for ``policy``."""

    async def count(redis: Redis) -> int:
        votes = await LabelStore(redis, prefix).all_votes(policy)
        return sum(len(v) for v in votes.values())

    return with_redis(redis_url, count)


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


_TROUBLE = re.compile(r"\[(WARNING|ERROR|CRITICAL)\]|^\S+ \S+ (WARNING|ERROR|CRITICAL) ")


def troubled_lines(path: Path) -> list[str]:
    """The WARNING, ERROR and CRITICAL lines of a process's log (faust's format or ours)."""
    return [line for line in log_lines(path) if _TROUBLE.search(line)]


def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> float | None:
    """Seconds until ``process`` exited, or None if it still runs after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            return time.monotonic() - started
        time.sleep(0.05)
    return None
