"""One trainer at a time (`streams.service.lease`) on a real redis-server: the lease's own rules;
two trainer loops in two real processes, the second waiting and taking over when the first is
killed (it stops renewing) or stops cleanly (it releases); a trainer whose lease another one
took stops its loop, and its `Trainer.step` neither records nor promotes a candidate."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from streams.service.lease import LeaseLost, TrainerLease, lease_key
from streams.service.trainer import TrainerState

from .test_trainer import T0, _world

TTL_S = 0.6

# A trainer loop as the trainer process runs it (`TrainerLease.serve`, SIGTERM cancels), whose
# step appends the process's name to a Redis list: who worked, and when.
LOOP = """
import asyncio, signal, sys, time
from redis.asyncio import Redis
from streams.service.lease import TrainerLease

url, key, name, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

async def main():
    this = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    redis = Redis.from_url(url)
    lease = TrainerLease(redis, key, ttl_s=ttl, token=name)

    async def steps():
        while True:
            await redis.rpush(key + ":steps", f"{name} {time.time():.3f}")
            await asyncio.sleep(0.05)

    def note(text):
        print(text, flush=True)

    try:
        await lease.serve(steps, note)
    finally:
        await redis.aclose()

try:
    asyncio.run(main())
except asyncio.CancelledError:
    print("stopped", flush=True)
"""


def _loop(redis_url: str, key: str, name: str, tmp: Path) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[4]
    return subprocess.Popen(
        [sys.executable, "-c", LOOP, redis_url, key, name, str(TTL_S)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=open(tmp / f"{name}.out", "w"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def _steps(run_redis: Any, key: str) -> list[tuple[str, float]]:
    async def body(redis: Redis) -> list[bytes]:
        return list(await redis.lrange(key + ":steps", 0, -1))

    return [(n, float(t)) for n, t in (raw.decode().split() for raw in run_redis(body))]


def _wait_for(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_holder_renewed_and_released_only_by_its_token(run_redis: Any, prefix: str) -> None:
    key = lease_key(prefix)

    async def body(redis: Redis) -> None:
        a = TrainerLease(redis, key, ttl_s=TTL_S, token="a")
        b = TrainerLease(redis, key, ttl_s=TTL_S, token="b")
        assert await a.acquire() and not await b.acquire()
        assert await a.acquire()  # holding it already: a renewal
        await a.check()
        with pytest.raises(LeaseLost, match="held by a"):
            await b.check()
        assert not await b.renew() and not await b.release()
        assert await a.holder() == "a"
        await asyncio.sleep(TTL_S / 2)
        assert await a.renew()  # pushed out again
        await asyncio.sleep(TTL_S * 0.7)
        assert await a.holder() == "a"  # past the first ttl, still held
        assert await a.release()
        assert await a.holder() is None
        with pytest.raises(LeaseLost, match="held by nobody"):
            await a.check()
        assert await b.acquire()
        await asyncio.sleep(TTL_S * 1.2)  # not renewed: it lapses
        assert await b.holder() is None

    run_redis(body)


@pytest.mark.parametrize("stop", ["killed", "terminated"])
def test_a_second_trainer_waits_and_takes_over(
    stop: str, run_redis: Any, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    key = lease_key(prefix)
    first = _loop(redis_url, key, "first", tmp_path)
    second = None
    try:
        _wait_for(lambda: any(n == "first" for n, _ in _steps(run_redis, key)))
        second = _loop(redis_url, key, "second", tmp_path)
        _wait_for(lambda: "held by first" in (tmp_path / "second.out").read_text())
        time.sleep(3 * TTL_S)  # several renewals: the second still only waits
        assert {n for n, _ in _steps(run_redis, key)} == {"first"}

        first.send_signal(signal.SIGKILL if stop == "killed" else signal.SIGTERM)
        assert first.wait(timeout=10) is not None
        stopped = time.time()
        _wait_for(lambda: any(n == "second" for n, _ in _steps(run_redis, key)))
        steps = _steps(run_redis, key)
        last_first = max(t for n, t in steps if n == "first")
        first_second = min(t for n, t in steps if n == "second")
        assert first_second > last_first  # never both at once
        took = first_second - stopped
        if stop == "killed":  # nothing released: the lease lapses, at most a ttl and a try later
            assert took <= TTL_S + TTL_S / 3 + 0.5, took
        else:  # released on the way out: taken at the second's next try
            assert "stopped" in (tmp_path / "first.out").read_text()
            assert took <= TTL_S / 3 + 0.5, took
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_a_trainer_whose_lease_was_taken_stops_its_loop(run_redis: Any, prefix: str) -> None:
    key = lease_key(prefix)

    async def body(redis: Redis) -> tuple[bool, int]:
        lease = TrainerLease(redis, key, ttl_s=TTL_S, token="paused")
        assert await lease.acquire()
        ticks = 0

        async def work() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.02)

        async def usurp() -> None:  # its renewals did not arrive in time; another took it
            await asyncio.sleep(TTL_S / 2)
            await redis.set(key, "other", px=10_000)

        usurper = asyncio.ensure_future(usurp())
        finished = await asyncio.wait_for(lease.run(work), timeout=5)
        await usurper
        seen = ticks
        await asyncio.sleep(0.1)
        assert ticks == seen, "the work went on after the lease was lost"
        assert await lease.holder() == "other"  # and the other's lease was not touched
        return finished, seen

    finished, ticks = run_redis(body)
    assert finished is False and ticks > 0


def test_a_step_that_lost_the_lease_neither_records_nor_promotes(
    run_redis: Any, prefix: str
) -> None:
    world = _world()
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    world.verdicts.flags = {"input"}  # a passing candidate, as in test_trainer

    async def body(redis: Redis) -> None:
        lease = TrainerLease(redis, lease_key(prefix), ttl_s=TTL_S, token="mine")
        assert await lease.acquire()
        await redis.set(lease.key, "other")
        trainer = world.trainer()
        trainer.ports = dataclasses.replace(trainer.ports, lease=lease)
        with pytest.raises(LeaseLost, match="held by other"):
            await trainer.step(TrainerState())

    run_redis(body)
    assert world.lab.trained  # it trained (the lease is checked before anything is decided)
    assert world.registry.records["v1"].adapter_id == "boot"  # but nothing was promoted
    assert world.verdicts.records == [] and world.events.sent == []
