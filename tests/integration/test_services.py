"""The embedded-services launcher against the real tansu and redis-server binaries."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.embedded.detached import services_down, services_status, services_up
from streams.embedded.services import EmbeddedServices, ServiceEndpoints, ServiceError

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _closed(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _ports(endpoints: ServiceEndpoints) -> list[str]:
    redis_host_port = endpoints.redis_url.removeprefix("redis://").rpartition("/")[0]
    return [endpoints.bootstrap_servers, redis_host_port]


async def _kafka_echo(bootstrap_servers: str, topic: str, value: bytes) -> list[bytes]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
        return [msg.value for msgs in batches.values() for msg in msgs]
    finally:
        await consumer.stop()


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_kafka_and_redis_round_trip_then_everything_stops(tmp_path: Path) -> None:
    services = EmbeddedServices(state_dir=tmp_path)

    # Entered from inside a running event loop, as an async test or the demo would.
    async def body() -> tuple[ServiceEndpoints, dict[str, int]]:
        with services as endpoints:
            pids = services.pids
            topic = f"test.services.{uuid.uuid4().hex}"
            assert await _kafka_echo(endpoints.bootstrap_servers, topic, b"hello") == [b"hello"]
            client = redis.Redis.from_url(endpoints.redis_url)
            try:
                client.set("test:services", "v")
                assert client.get("test:services") == b"v"
            finally:
                client.close()
            return endpoints, pids

    endpoints, pids = asyncio.run(body())
    assert set(pids) == {"tansu", "redis"}
    assert all(_gone(pid) for pid in pids.values())
    assert all(_closed(port) for port in _ports(endpoints))
    assert (tmp_path / "tansu.log").is_file() and (tmp_path / "redis.log").is_file()
    with pytest.raises(ServiceError):
        _ = services.endpoints


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_body_that_raises_still_stops_everything(tmp_path: Path, error: BaseException) -> None:
    services = EmbeddedServices(state_dir=tmp_path)
    with pytest.raises(type(error)), services as endpoints:
        pids = services.pids
        raise error
    assert all(_gone(pid) for pid in pids.values())
    assert all(_closed(port) for port in _ports(endpoints))


@pytest.mark.parametrize("which", ["tansu_bin", "redis_bin"])
def test_missing_binary_is_one_clear_line(tmp_path: Path, which: str) -> None:
    missing = tmp_path / "no-such-binary"
    with pytest.raises(ServiceError) as caught:
        if which == "tansu_bin":
            EmbeddedServices(state_dir=tmp_path, tansu_bin=missing).start()
        else:
            EmbeddedServices(state_dir=tmp_path, redis_bin=missing).start()
    message = str(caught.value)
    assert "\n" not in message
    assert str(missing) in message and "not found" in message
    assert not (tmp_path / "tansu.log").exists()  # nothing was started


def test_binary_that_exits_early_names_it_and_its_log(tmp_path: Path) -> None:
    broken = _script(tmp_path / "broken-redis", "echo 'Address already in use' >&2; exit 3")
    with pytest.raises(ServiceError) as caught:
        EmbeddedServices(state_dir=tmp_path, redis_bin=broken).start()
    message = str(caught.value)
    assert "\n" not in message
    assert str(broken) in message and "code 3" in message
    assert "port is already in use" in message and "Address already in use" in message


def test_service_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "mute.pid"
    mute = _script(
        tmp_path / "mute-tansu", f"echo $$ > {pid_file}; echo listening soon; exec sleep 60"
    )
    with pytest.raises(ServiceError) as caught:
        EmbeddedServices(state_dir=tmp_path, tansu_bin=mute, start_timeout_s=1.0).start()
    message = str(caught.value)
    assert "\n" not in message
    assert str(mute) in message and "127.0.0.1:" in message and "within 1 s" in message
    assert "listening soon" in message
    assert _gone(int(pid_file.read_text()))


def test_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    endpoints = services_up(tmp_path)
    try:
        status = services_status(tmp_path)
        assert set(status) == {"tansu", "redis"}
        assert all(s["alive"] and s["reachable"] for s in status.values())
        assert f"127.0.0.1:{status['tansu']['port']}" == endpoints.bootstrap_servers
        with pytest.raises(ServiceError, match="still running"):
            services_up(tmp_path)
    finally:
        stopped = services_down(tmp_path)
    assert sorted(s.split()[0] for s in stopped) == ["redis", "tansu"]
    assert all(_gone(s["pid"]) for s in status.values())
    assert all(_closed(port) for port in _ports(endpoints))
    assert services_status(tmp_path) == {}
    assert services_down(tmp_path) == []
