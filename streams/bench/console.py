"""`borderline bench console --reviewers N --json FILE`: simulated reviewers over HTTP against a
real console process, broker, Redis and collector. Each reviewer (an API token) claims the next
task and answers it until the queue is empty. Figures: claim and submit latency (p50, p99),
labels per second, errors (any answer but 200/202/204), double claims (an item given fresh to two
reviewers while one opinion was wanted) and labels lost (accepted by the console but not in the
label store once the collector has settled)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from argon2 import PasswordHasher
from redis.asyncio import Redis

from adapters.labels.store import LabelStore, ReviewedItem
from streams.bench.stream import isolated_run
from streams.console.keys import ConsoleKeys
from streams.console.users import Role, UserStore
from streams.embedded.launcher import free_port, settings_env, start_worker
from streams.wire.messages import ReviewReason, ReviewRequest, encode
from streams.wire.security import KafkaSecurity, redis_options
from streams.wire.settings import Settings

__all__ = ["bench_console"]


def _requests(n: int, now: float) -> list[ReviewRequest]:
    return [
        ReviewRequest(
            request_id=f"rr-bench-{i}",
            item_id=f"b{i:05d}",
            text=f"bench item {i}: limited offer, reply now",
            reason=ReviewReason.UNCERTAIN,
            probabilities={"violating": 0.5},
            policy_version="v1",
            priority=round(1 - i / (n + 1), 6),
            requested_at=now,
        )
        for i in range(n)
    ]


async def _prepare(run: Settings, reviewers: int, requests: list[ReviewRequest]) -> list[str]:
    """Reviewer accounts with tokens, and the requests recorded and sent as the curator does."""
    from aiokafka import AIOKafkaProducer

    assert run.redis.url is not None and run.kafka.bootstrap_servers
    redis = Redis.from_url(run.redis.url.get_secret_value(), **redis_options(run.redis))
    labels = LabelStore(redis, run.redis.key_prefix)
    users = UserStore(redis, ConsoleKeys(run.redis.key_prefix), PasswordHasher(), labels)
    tokens = []
    for k in range(reviewers):
        await users.add(f"r{k:03d}", Role.REVIEWER, None, now=time.time())
        tokens.append(await users.new_token(f"r{k:03d}"))
    await labels.record_requests(
        "v1",
        [
            ReviewedItem(
                r.item_id,
                r.text,
                None,
                0.5,
                r.reason.value,
                r.requested_at,
                request_id=r.request_id,
                policy_version="v1",
            )
            for r in requests
        ],
    )
    await redis.aclose()
    producer = AIOKafkaProducer(
        bootstrap_servers=run.kafka.bootstrap_servers,
        acks="all",
        **KafkaSecurity.of(run.kafka).options(),
    )
    await producer.start()
    try:
        for r in requests:
            await producer.send(run.kafka.topics.review_requests, encode(r), key=r.item_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return tokens


async def _reviewer(
    url: str, token: str, seen: dict[str, list[str]], figures: dict[str, Any], deadline: float
) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            task = await client.get("/api/v1/tasks/next")
            if task.status_code == 200:
                figures["claim_s"].append(time.perf_counter() - started)
            if task.status_code == 204:
                if figures["queued"] <= len(figures["accepted"]):
                    return
                await asyncio.sleep(0.2)  # the console may still be reading requests
                continue
            if task.status_code != 200:
                figures["errors"] += 1
                continue
            item = task.json()["item_id"]
            seen.setdefault(item, []).append(token)
            started = time.perf_counter()
            done = await client.post("/api/v1/labels", json={"item_id": item, "label": "benign"})
            figures["submit_s"].append(time.perf_counter() - started)
            if done.status_code == 202:
                figures["accepted"].append((item, done.json()["reviewer_id"]))
            else:
                figures["errors"] += 1


async def _stored(run: Settings, accepted: list[tuple[str, str]], settle_s: float) -> int:
    assert run.redis.url is not None
    redis = Redis.from_url(run.redis.url.get_secret_value(), **redis_options(run.redis))
    labels = LabelStore(redis, run.redis.key_prefix)
    deadline = time.monotonic() + settle_s
    try:
        while True:
            votes = await labels.all_votes("v1")
            stored = sum(1 for item, reviewer in accepted if reviewer in votes.get(item, {}))
            if stored >= len(accepted) or time.monotonic() > deadline:
                return stored
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


def _start_console(run: Settings, logs: Path, stack: ExitStack) -> str:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
    env.update(settings_env(run), PYTHONUNBUFFERED="1")
    out = (logs / "console.log").open("wb")
    stack.callback(out.close)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "console", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    stack.callback(proc.wait, 10)
    stack.callback(proc.terminate)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the console did not start: see {logs / 'console.log'}")


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def bench_console(settings: Settings, *, reviewers: int, items: int) -> dict[str, Any]:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    with ExitStack() as stack:
        run, logs, _tag = isolated_run(stack, settings)
        run = run.model_copy(update={"console": run.console.model_copy(update={"undo_s": 0.5})})
        collector = start_worker(run, "bench-collector", logs / "collector.log", role="collector")
        stack.callback(collector.stop)
        tokens = asyncio.run(_prepare(run, reviewers, _requests(items, time.time())))
        url = _start_console(run, logs, stack)
        figures: dict[str, Any] = {
            "claim_s": [],
            "submit_s": [],
            "accepted": [],
            "errors": 0,
            "queued": items,
        }
        seen: dict[str, list[str]] = {}

        async def everyone() -> float:
            started = time.perf_counter()
            deadline = time.monotonic() + 300
            await asyncio.gather(*(_reviewer(url, t, seen, figures, deadline) for t in tokens))
            return time.perf_counter() - started

        wall = asyncio.run(everyone())
        accepted = figures["accepted"]
        stored = asyncio.run(_stored(run, accepted, settle_s=60))
        return {
            "reviewers": reviewers,
            "items": items,
            "labels": len(accepted),
            "wall_s": round(wall, 2),
            "claim_ms_p50": _ms(figures["claim_s"], 50),
            "claim_ms_p99": _ms(figures["claim_s"], 99),
            "submit_ms_p50": _ms(figures["submit_s"], 50),
            "submit_ms_p99": _ms(figures["submit_s"], 99),
            "labels_per_s": round(len(accepted) / wall, 2) if wall else None,
            "errors": figures["errors"],
            "double_claims": sum(1 for holders in seen.values() if len(set(holders)) > 1),
            "labels_lost": len(accepted) - stored,
        }
