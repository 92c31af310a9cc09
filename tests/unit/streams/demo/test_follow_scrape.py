"""The demo reads the processes' /metrics over HTTP: the drift series, and why the collector
asked its second opinions (the demo report's ``second_opinions_by_why``)."""

from __future__ import annotations

import asyncio
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from streams.demo.follow import _drift, _scrape
from streams.demo.state import DemoState
from streams.embedded.launcher import free_port
from streams.service.metrics import Metrics


def _serve(metrics: Metrics) -> tuple[int, WSGIServer]:
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    return port, server


def test_the_second_opinions_by_why_are_read_from_the_collectors_metrics() -> None:
    collector, worker = Metrics(), Metrics()
    collector.second_opinions.labels(why="split").inc(3)
    collector.second_opinions.labels(why="untrusted").inc(2)
    collector.drift_statistic.labels(signal="concept").set(0.12)
    worker.drift_statistic.labels(signal="input").set(0.4)
    ports, servers = zip(*(_serve(m) for m in (collector, worker)), strict=True)
    try:
        scraped = _scrape(ports[0])
        assert scraped["borderline_second_opinions_total"] == {"split": 3.0, "untrusted": 2.0}
        assert scraped["borderline_drift_statistic"] == {"concept": 0.12}
        state = DemoState()
        procs = [_Proc(port) for port in ports]
        asyncio.run(_drift(state, procs))  # type: ignore[arg-type]
        assert state.second_opinions_why == {"split": 3.0, "untrusted": 2.0}
        assert state.drift == {"concept": 0.12, "input": 0.4}
    finally:
        for server in servers:
            server.shutdown()


class _Proc:
    """What `_drift` reads of a `WorkerProcess`: its metrics port."""

    def __init__(self, port: int) -> None:
        self.metrics_port = port
