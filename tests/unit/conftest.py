"""The unit layer: fast, and held to it. Every unit test and docstring example gets a short
timeout (the 900 s in pyproject.toml is for the model and integration layers, which train and
stream); the Redis stores are tested against a private redis-server that the session starts on
a unix socket in milliseconds."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from tests.redis_support import redis_server, with_redis

UNIT_TIMEOUT_S = 60
UNIT_DIR = Path(__file__).resolve().parent

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A unit test (or a docstring example) that runs a minute is a bug: fail it then, not
    after the integration layer's 900 s. A test's own ``timeout`` marker still wins."""
    for item in items:
        is_unit = item.path.is_relative_to(UNIT_DIR) or isinstance(item, pytest.DoctestItem)
        if is_unit and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))


@pytest.fixture
def no_borderline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BORDERLINE_* variable of the machine's reaches the test's settings."""
    for name in list(os.environ):
        if name.upper().startswith("BORDERLINE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole unit session (no TCP port, no persistence)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own on the shared server."""
    return f"unit-{uuid.uuid4().hex[:10]}"


RunRedis = Callable[[Callable[[Redis], Awaitable[Any]]], Any]


@pytest.fixture
def run_redis(redis_url: str) -> RunRedis:
    """``run_redis(body)``: run ``body(client)`` against the session's redis-server."""

    def run(body: Callable[[Redis], Awaitable[T]]) -> T:
        return with_redis(redis_url, body)

    return run
