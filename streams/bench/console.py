"""`borderline bench console --reviewers N --json FILE`: simulated reviewers over HTTP against a
real console process, broker, Redis and collector. Each reviewer (an API token) claims the next task
and answers it at once until the queue is empty (no time to think: the figures are the console under
20 reviewers' full load, not a human pace). The reviewers start once the console has queued every
request (``feed_s``: how long reading them took). Figures: claim and submit latency as the client
sees it (p50, p99), the console's own API time from its ``/metrics`` histogram (``server_api_ms_*``:
a bucket's upper bound), labels per second, errors (any answer but 200/202/204), second opinions
(items the collector asked a second reviewer for), double claims (an item given to more reviewers
than it wanted opinions) and labels lost (accepted by the console but not in the label store once
the collector has settled)."""

from __future__ import annotations

import asyncio
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

__all__ = ["bench_console", "record_and_send", "start_console"]


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


async def record_and_send(run: Settings, requests: list[ReviewRequest]) -> None:
    """As the curator does: the requests recorded in the label store (so the collector admits
    their labels), then sent on the review-requests topic (the bench and the browser tests)."""
    from aiokafka import AIOKafkaProducer

    assert run.redis.url is not None and run.kafka.bootstrap_servers
    redis = Redis.from_url(run.redis.url.get_secret_value(), **redis_options(run.redis))
    try:
        labels = LabelStore(redis, run.redis.key_prefix)
        by_policy: dict[str, list[ReviewedItem]] = {}
        for r in requests:
            if r.reason == ReviewReason.SECOND_OPINION:  # the item is recorded already
                await labels.record_asked(r.item_id, r.request_id, r.policy_version)
                continue
            by_policy.setdefault(r.policy_version, []).append(
                ReviewedItem(
                    r.item_id,
                    r.text,
                    None,
                    r.probabilities.get("violating", 0.0),
                    r.reason.value,
                    r.requested_at,
                    request_id=r.request_id,
                    policy_version=r.policy_version,
                )
            )
        for policy, items in by_policy.items():
            await labels.record_requests(policy, items)
    finally:
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


async def _prepare(run: Settings, reviewers: int, requests: list[ReviewRequest]) -> list[str]:
    """Reviewer accounts with tokens, and the requests recorded and sent."""
    assert run.redis.url is not None
    redis = Redis.from_url(run.redis.url.get_secret_value(), **redis_options(run.redis))
    labels = LabelStore(redis, run.redis.key_prefix)
    users = UserStore(redis, ConsoleKeys(run.redis.key_prefix), PasswordHasher(), labels)
    tokens = []
    try:
        for k in range(reviewers):
            await users.add(f"r{k:03d}", Role.REVIEWER, None, now=time.time())
            tokens.append(await users.new_token(f"r{k:03d}"))
    finally:
        await redis.aclose()
    await record_and_send(run, requests)
    return tokens


async def _queued(run: Settings, items: int, within_s: float) -> float:
    """Seconds until the console has queued ``items`` requests read from the topic."""
    assert run.redis.url is not None
    redis = Redis.from_url(run.redis.url.get_secret_value(), **redis_options(run.redis))
    started = time.perf_counter()
    try:
        while await redis.zcard(ConsoleKeys(run.redis.key_prefix).queue("v1")) < items:
            if time.perf_counter() - started > within_s:
                raise RuntimeError(f"the console did not queue {items} requests in {within_s} s")
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    return time.perf_counter() - started


async def _reviewer(
    url: str, token: str, seen: dict[str, list[str]], figures: dict[str, Any], deadline: float
) -> None:
    """One simulated reviewer: claim, answer at once, until the queue is empty. The client is
    aiohttp (a faust dependency): with httpx the bench's own process took about as much CPU as
    the console, and its 20 clients' queueing showed up as console latency."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, headers=headers, timeout=timeout) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with client.get("/api/v1/tasks/next") as task:
                body = await task.json() if task.status == 200 else None
            if task.status == 200:
                figures["claim_s"].append(time.perf_counter() - started)
            if task.status == 204:
                if figures["queued"] <= len(figures["accepted"]):
                    return
                await asyncio.sleep(0.2)  # the console may still be reading requests
                continue
            if body is None:
                figures["errors"] += 1
                continue
            item = body["item_id"]
            seen.setdefault(item, []).append(token)
            started = time.perf_counter()
            answer = {"item_id": item, "label": "benign"}
            async with client.post("/api/v1/labels", json=answer) as done:
                said = await done.json()
            figures["submit_s"].append(time.perf_counter() - started)
            if done.status == 202:
                figures["accepted"].append((item, said["reviewer_id"]))
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


async def _wanted(run: Settings, items: list[str]) -> dict[str, int]:
    """The opinions the console's queue wanted of each item: more than one once the collector
    asked a second opinion (`BORDERLINE_REVIEW__OVERLAP_RATE`), so two reviewers are right."""
    assert run.redis.url is not None
    redis = Redis.from_url(run.redis.url.get_secret_value(), **redis_options(run.redis))
    keys = ConsoleKeys(run.redis.key_prefix)
    try:
        return {i: int(await redis.hget(keys.task("v1", i), "wanted") or 1) for i in items}
    finally:
        await redis.aclose()


def start_console(run: Settings, log: Path, stack: ExitStack, *, cwd: Path | None = None) -> str:
    """``borderline console`` as its own process on a free port, stopped when ``stack`` closes;
    its URL once ``/healthz`` answers (the bench and the browser tests)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
    env.update(settings_env(run), PYTHONUNBUFFERED="1")
    out = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "console", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the console exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the console did not start in 30 s: see {log}")


def _server_ms(url: str, q: float) -> float | None:
    """The console's own API request duration at quantile ``q`` (the upper bound of its
    histogram bucket, from ``/metrics``): time spent inside the console, without the client
    and the wire."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("borderline_console_request_seconds_bucket{") and 'route="api"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if total and count >= q / 100 * total:
            return None if bound == float("inf") else bound * 1000
    return None


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def bench_console(settings: Settings, *, reviewers: int, items: int) -> dict[str, Any]:
    with ExitStack() as stack:
        run, logs, _tag = isolated_run(stack, settings)
        run = run.model_copy(update={"console": run.console.model_copy(update={"undo_s": 0.5})})
        collector = start_worker(run, "bench-collector", logs / "collector.log", role="collector")
        stack.callback(collector.stop)
        tokens = asyncio.run(_prepare(run, reviewers, _requests(items, time.time())))
        url = start_console(run, logs / "console.log", stack)
        feed_s = asyncio.run(_queued(run, items, within_s=120))  # reviewers start on a full queue
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
        shared = [item for item, holders in seen.items() if len(set(holders)) > 1]
        wanted = asyncio.run(_wanted(run, shared))
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
            "feed_s": round(feed_s, 2),
            "server_api_ms_p50": _server_ms(url, 50),
            "server_api_ms_p99": _server_ms(url, 99),
            "errors": figures["errors"],
            "second_opinions": sum(1 for w in wanted.values() if w > 1),
            "double_claims": sum(
                1 for item, holders in seen.items() if len(set(holders)) > wanted.get(item, 1)
            ),
            "labels_lost": len(accepted) - stored,
        }
