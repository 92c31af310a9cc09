"""Redis for the tests: a private redis-server on a unix socket (it starts in milliseconds, so the
unit layer can test the Redis stores against the real server), and the one runner that hands a
coroutine a client and closes it afterwards, used by the unit and the integration tests."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

from redis.asyncio import Redis

__all__ = ["redis_client", "redis_server", "with_redis"]

T = TypeVar("T")


@asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Redis]:
    """A client on ``url`` for the current event loop, closed on the way out."""
    redis = Redis.from_url(url)
    try:
        yield redis
    finally:
        await redis.aclose()


def with_redis(url: str, body: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``body(client)`` to completion in a fresh event loop and return its result."""

    async def main() -> T:
        async with redis_client(url) as redis:
            return await body(redis)

    return asyncio.run(main())


def _pong(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1.0)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(directory: Path, *, start_timeout_s: float = 10.0) -> Iterator[str]:
    """Start ``redis-server`` (no TCP port, no persistence) with its socket and log in
    ``directory``; yield its URL; stop it on the way out. A missing binary is a failure with the
    fix in the message, never a skip."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: `make system-deps` (Debian: redis-server)"
    sock = directory / "redis.sock"
    log = directory / "redis.log"
    cmd = [
        binary,
        *("--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"),
        *("--save", "", "--appendonly", "no", "--dir", str(directory)),
        *("--logfile", str(log)),
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _pong(sock):
            exited = process.poll()
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            assert exited is None, f"redis-server exited with {exited}: {text}"
            assert time.monotonic() < deadline, f"redis-server silent after {start_timeout_s}s"
            time.sleep(0.005)
        yield f"unix://{sock}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
