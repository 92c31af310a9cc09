"""`borderline bench swap`: what a live adapter swap costs, measured in one run.

- swap latency inside a worker: from the worker receiving the promotion to the start of its first
  batch scored with the new adapter (the worker logs when it received it; the decision records
  when its batch was scored);
- time until every worker serves it: from the promotion call to the last worker's first decision
  on the new adapter;
- stream throughput with a promotion every second against without swaps, same run, same items
  size (baseline measured before and after the swap run, averaged: these machines drift);
- memory per extra loaded adapter: resident memory of a scorer before and after loading K.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis

from adapters.labels.dataset import LabeledItem
from adapters.registry.artifact import (
    BOOTSTRAP_ARTIFACT,
    MANIFEST_FILE,
    AdapterArtifact,
    write_artifact,
)
from adapters.registry.keys import read_signing_key
from adapters.registry.signing import sign_adapter
from adapters.registry.store import AdapterRegistry
from models.adapter_file import read_adapter_file
from models.errors import BorderlineError
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.bench.stream import bench_items, isolated_run, stream_run
from streams.embedded.keys import with_embedded_keys
from streams.embedded.launcher import WorkerProcess, start_worker
from streams.service.reader import read_topic
from streams.wire.settings import Settings

__all__ = ["bench_swap"]

_RECEIVED = re.compile(
    r"adapter swap worker=(\S+) from=\S+ to=(\S+) .* swap_ms=([0-9.]+) received=([0-9.]+)"
)


def _variants(model_dir: Path, out: Path, count: int, seed: int) -> list[AdapterArtifact]:
    """``count`` distinct adapters for the base: the bootstrap adapter with a perturbed head."""
    manifest = ModelManifest.read(model_dir)
    boot = AdapterArtifact.load(
        model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    params = read_adapter_file(boot.path)
    rng = np.random.default_rng(seed)
    artifacts = []
    for k in range(count):
        changed = dict(params)
        for name in ("classifier.weight", "classifier.bias"):
            noise = rng.normal(0.0, 0.01, size=params[name].shape).astype(np.float32)
            changed[name] = params[name] + noise
        artifacts.append(
            write_artifact(
                out / f"variant-{k}",
                adapter_id=f"bench-variant-{k}-s{seed}",
                params=changed,
                base_model_version=manifest.model_version,
                policy_version=manifest.policy_version,
                labels=manifest.labels,
                parent_id=boot.adapter_id,
                created_by="borderline bench swap",
            )
        )
    return [boot, *artifacts]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _mb_per_adapter(model_dir: Path, artifacts: list[AdapterArtifact]) -> float:
    scorer = Scorer.from_dir(model_dir, threads=1)
    texts = ["warm-up text for the scorer"] * 4
    scorer.score(texts)
    before = _rss_mb()
    for artifact in artifacts[1:]:
        scorer.load_adapter(artifact.adapter_id, artifact.path)
        scorer.score(texts, adapter_id=artifact.adapter_id)  # touch it: mapped pages count
    return (_rss_mb() - before) / max(1, len(artifacts) - 1)


async def _promote(settings: Settings, adapter_id: str) -> float:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    try:
        registry = AdapterRegistry(redis, settings.redis.key_prefix)
        started = time.time()
        await registry.promote(adapter_id, actor="borderline bench swap", reason="benchmark")
        return started
    finally:
        await redis.aclose()


async def _register(settings: Settings, artifacts: list[AdapterArtifact]) -> None:
    """Register the variants, signed with the trainer's key (workers load only signed adapters;
    the bootstrap, first, is trusted as the model folder has it)."""
    assert settings.redis.url is not None
    if settings.adapters.signing_key_file is None:
        raise BorderlineError(
            "bench swap signs its adapter variants as the trainer does: set "
            "BORDERLINE_ADAPTERS__SIGNING_KEY_FILE (and the workers' VERIFY_KEY_FILE)"
        )
    key = read_signing_key(settings.adapters.signing_key_file)
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    try:
        registry = AdapterRegistry(redis, settings.redis.key_prefix)
        for k, artifact in enumerate(artifacts):
            await registry.register(artifact)
            if k > 0:
                gate = {
                    "adapter_id": artifact.adapter_id,
                    "policy_version": artifact.manifest.policy_version,
                    "passed": True,
                    "reason": "benchmark variant, signed by borderline bench swap",
                }
                manifest = artifact.files()[MANIFEST_FILE]
                await registry.attach_signature(sign_adapter(manifest, gate, key))
    finally:
        await redis.aclose()


def _renamed(items: list[LabeledItem], tag: str) -> list[LabeledItem]:
    return [LabeledItem(f"{tag}-{i.item_id}", i.text, i.label) for i in items]


def bench_swap(
    settings: Settings,
    *,
    items: int,
    workers: int,
    adapters: int,
    seed: int,
    interval_s: float = 1.0,
) -> dict[str, Any]:
    chosen = bench_items(settings, items, seed)
    figures: dict[str, Any] = {"items": len(chosen), "workers": workers, "interval_s": interval_s}
    with ExitStack() as stack:
        run, logs, _tag = isolated_run(stack, settings)
        run = with_embedded_keys(run)  # the workers verify what _register signs
        artifacts = _variants(settings.model.dir, logs / "adapters", adapters, seed)
        figures["mb_per_adapter"] = round(_mb_per_adapter(settings.model.dir, artifacts), 3)
        asyncio.run(_register(run, artifacts))
        asyncio.run(_promote(run, artifacts[0].adapter_id))
        procs: list[WorkerProcess] = []
        for k in range(workers):
            proc = start_worker(run, f"swap-{k}", logs / f"swap-{k}.log", wait=False)
            stack.callback(proc.stop)
            procs.append(proc)
        for proc in procs:
            proc.wait_ready()
        stream_run(run, _renamed(chosen[:32], "warm"), None, 120)

        base_1, _ = stream_run(run, _renamed(chosen, "base1"), None, 600)
        promotions: list[tuple[str, float]] = []
        stop = threading.Event()

        def promote_every_interval() -> None:
            k = 1
            while not stop.wait(interval_s):
                adapter = artifacts[k % len(artifacts)].adapter_id
                promotions.append((adapter, asyncio.run(_promote(run, adapter))))
                k += 1

        swapper = threading.Thread(target=promote_every_interval)
        swapper.start()
        try:
            with_swaps, _ = stream_run(run, _renamed(chosen, "swap"), None, 600)
        finally:
            stop.set()
            swapper.join()
        base_2, _ = stream_run(run, _renamed(chosen, "base2"), None, 600)
        baseline = (base_1 + base_2) / 2
        figures["items_per_s_without_swaps"] = round(baseline, 2)
        figures["items_per_s_with_swaps"] = round(with_swaps, 2)
        figures["throughput_ratio_during_swaps"] = round(with_swaps / baseline, 3)
        figures["promotions"] = len(promotions)
        figures.update(_latencies(run, procs, promotions))
    figures["targets"] = {
        "swap_ms<=50": figures["swap_ms_max"] <= 50,
        "all_workers_s<=5": figures["all_workers_s"] <= 5,
        "throughput_ratio>=0.95": figures["throughput_ratio_during_swaps"] >= 0.95,
    }
    return figures


def _latencies(
    run: Settings, procs: list[WorkerProcess], promotions: list[tuple[str, float]]
) -> dict[str, Any]:
    assert run.kafka.bootstrap_servers
    decisions = asyncio.run(
        read_topic(
            run.kafka.bootstrap_servers,
            run.kafka.topics.decisions,
            until=lambda m: False,
            timeout_s=10,
            idle_s=3,
        )
    )
    received: dict[tuple[str, str], list[float]] = {}
    activation_ms: list[float] = []
    for proc in procs:
        for match in _RECEIVED.finditer(proc.log.read_text(errors="replace")):
            worker, adapter, ms, at = match.groups()
            received.setdefault((worker, adapter), []).append(float(at))
            activation_ms.append(float(ms))
    swap_ms, all_workers = [], []
    for (adapter, promoted_at), nxt in zip(
        promotions, [*promotions[1:], (None, float("inf"))], strict=True
    ):
        window_end = nxt[1]
        firsts = []
        for proc in procs:
            served = [
                d
                for d in decisions
                if d["worker"] == proc.worker_id
                and d["adapter_version"] == adapter
                and promoted_at <= d["decided_at"] < window_end + 5
            ]
            if not served:
                continue
            first = min(served, key=lambda d: d["decided_at"])
            firsts.append(first["decided_at"])
            batch_start = first["decided_at"] - first["scoring_s"]
            times = [t for t in received.get((proc.worker_id, adapter), []) if t >= promoted_at]
            if times:
                swap_ms.append((batch_start - min(times)) * 1000.0)
        if len(firsts) == len(procs):
            all_workers.append(max(firsts) - promoted_at)
    if not swap_ms or not all_workers:
        raise RuntimeError("no swap could be measured: were decisions made during the swaps?")
    swaps = np.maximum(np.array(swap_ms), 0.0)
    return {
        "swap_ms_p50": round(float(np.percentile(swaps, 50)), 2),
        "swap_ms_max": round(float(swaps.max()), 2),
        "swaps_measured": len(swap_ms),
        # inside the swap alone: fetch from Redis, verify, load, activate
        "activation_ms_p50": round(float(np.percentile(activation_ms, 50)), 2),
        "activation_ms_max": round(float(max(activation_ms)), 2),
        "all_workers_s": round(float(max(all_workers)), 3),
        "all_workers_s_p50": round(float(np.percentile(all_workers, 50)), 3),
    }
