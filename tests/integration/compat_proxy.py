"""A byte-level TCP proxy that lets Debian's kcat (librdkafka 2.0.2) talk to tansu 0.6.0.

Why: tansu answers ApiVersions v3 with every tagged field present at its default value
(SupportedFeatures, FinalizedFeaturesEpoch, FinalizedFeatures, ZkMigrationReady). A real Kafka
broker omits tagged fields that hold defaults, and librdkafka 2.0.2 misreads tansu's tag section
("Protocol read buffer underflow for ApiVersion v3"). The proxy forwards every frame unchanged
except ApiVersions (v3+) responses, whose tagged section it replaces with "no tagged fields" —
exactly what Apache Kafka itself sends. Nothing else is touched: kcat really produces to and
consumes from the broker. Tests only; production runs against Apache Kafka.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from ssl import SSLContext

API_VERSIONS = 18


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def strip_api_versions_tags(body: bytes) -> bytes:
    """``body`` = correlation id + ApiVersions v3 response; drop its trailing tagged fields."""
    pos = 4 + 2  # correlation id, error code
    count, pos = _uvarint(body, pos)
    for _ in range(count - 1):
        pos += 6  # api key, min version, max version
        tags, pos = _uvarint(body, pos)
        for _ in range(tags):
            _tag, pos = _uvarint(body, pos)
            size, pos = _uvarint(body, pos)
            pos += size
    pos += 4  # throttle time
    return body[:pos] + b"\x00"


async def _pipe_requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: dict[int, tuple[int, int]]
) -> None:
    while True:
        size_bytes = await reader.readexactly(4)
        frame = await reader.readexactly(struct.unpack(">i", size_bytes)[0])
        api_key, api_version, corr = struct.unpack(">hhi", frame[:8])
        pending[corr] = (api_key, api_version)
        writer.write(size_bytes + frame)
        await writer.drain()


async def _pipe_responses(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: dict[int, tuple[int, int]]
) -> None:
    while True:
        size_bytes = await reader.readexactly(4)
        frame = await reader.readexactly(struct.unpack(">i", size_bytes)[0])
        (corr,) = struct.unpack(">i", frame[:4])
        api_key, api_version = pending.pop(corr, (-1, -1))
        if api_key == API_VERSIONS and api_version >= 3:
            frame = strip_api_versions_tags(frame)
            size_bytes = struct.pack(">i", len(frame))
        writer.write(size_bytes + frame)
        await writer.drain()


@contextmanager
def serving_in_thread(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    listen_port: int,
    *,
    name: str,
    ssl: SSLContext | None = None,
) -> Iterator[None]:
    """An asyncio server on 127.0.0.1:listen_port calling ``handle`` for each connection (over
    TLS with ``ssl``), run on an event loop in a thread of its own until the block ends: the
    test proxies' (this one and `tests.integration.tls_proxy`)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            asyncio.start_server(handle, "127.0.0.1", listen_port, ssl=ssl)
        )
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError(f"{name} did not start on 127.0.0.1:{listen_port}")
    try:
        yield
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def compat_proxy(listen_port: int, broker_port: int) -> Iterator[None]:
    """Run the proxy on 127.0.0.1:listen_port -> 127.0.0.1:broker_port in a thread."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", broker_port)
        pending: dict[int, tuple[int, int]] = {}
        tasks = [
            asyncio.ensure_future(_pipe_requests(client_r, broker_w, pending)),
            asyncio.ensure_future(_pipe_responses(broker_r, client_w, pending)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (client_w, broker_w):
            w.close()

    with serving_in_thread(handle, listen_port, name="kafka-compat-proxy"):
        yield
