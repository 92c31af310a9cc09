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
import itertools
import re
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
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
        # the runs replay the same texts: a cache would measure itself, not the swaps
        run = run.model_copy(update={"cache": run.cache.model_copy(update={"enabled": False})})
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
        figures["items_per_s_without_swaps_before_after"] = [round(base_1, 2), round(base_2, 2)]
        figures["promotions"] = len(promotions)
        decisions, received = _all_decisions(run), _received(procs)
        worker_ids = [proc.worker_id for proc in procs]
        figures.update(
            swap_figures(
                decisions, received, promotions, worker_ids, batch_max=run.worker.batch_max_size
            )
        )
        switches: dict[str, list[tuple[float, float]]] = {}
        for (worker, _adapter), seen in received.items():
            switches.setdefault(worker, []).extend(seen)
        figures.update(phase_parts(decisions, swaps=switches))
    figures["targets"] = {
        "swap_ms<=50": figures["swap_ms_max"] <= 50,
        "all_workers_s<=5": figures["all_workers_s"] <= 5,
        "throughput_ratio>=0.95": figures["throughput_ratio_during_swaps"] >= 0.95,
        "first_decision_ms_max<=batch_ms_p50+20": figures["first_decision_ms_max"]
        <= figures["batch_ms_p50"] + 20,
        "late_batches==0": figures["late_batches"] == 0,
    }
    return figures


@dataclass(frozen=True)
class _Batch:
    """One batch as its decisions show it: when it started scoring, when it was decided."""

    worker: str
    adapter: str
    started: float
    decided: float
    size: int


def _batches(decisions: list[dict[str, Any]]) -> dict[str, list[_Batch]]:
    """Each worker's batches in order (a batch's decisions share ``decided_at``; cached items,
    whose ``scoring_s`` is 0, take their batch's start from its scored items)."""
    grouped: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for d in decisions:
        grouped.setdefault((d["worker"], d["decided_at"]), []).append(d)
    out: dict[str, list[_Batch]] = {}
    for (worker, decided), group in grouped.items():
        scoring = max(d["scoring_s"] for d in group)
        out.setdefault(worker, []).append(
            _Batch(worker, group[0]["adapter_version"], decided - scoring, decided, len(group))
        )
    for batches in out.values():
        batches.sort(key=lambda b: b.started)
    return out


def _received(procs: list[WorkerProcess]) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(worker, adapter) -> every (received, activation seconds) the worker logged for it."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for proc in procs:
        for match in _RECEIVED.finditer(proc.log.read_text(errors="replace")):
            worker, adapter, ms, at = match.groups()
            out.setdefault((worker, adapter), []).append((float(at), float(ms) / 1000.0))
    return out


def _p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def _all_decisions(run: Settings) -> list[dict[str, Any]]:
    assert run.kafka.bootstrap_servers
    return asyncio.run(
        read_topic(
            run.kafka.bootstrap_servers,
            run.kafka.topics.decisions,
            until=lambda m: False,
            timeout_s=10,
            idle_s=3,
        )
    )


def _gaps(
    batches: dict[str, list[_Batch]], swaps: dict[str, list[tuple[float, float]]]
) -> list[tuple[float, bool]]:
    """Each worker's idle gaps between consecutive batches (seconds), and whether a switch of
    that worker's (received at, activation seconds) overlapped the gap."""
    out = []
    for worker, mine in batches.items():
        switches = swaps.get(worker, [])
        for a, b in itertools.pairwise(mine):
            if b.started <= a.decided:
                continue
            during = any(at <= b.started and at + act >= a.decided for at, act in switches)
            out.append((b.started - a.decided, during))
    return out


PHASES = ("base1", "swap", "base2")
"""The bench's runs, in order, as their item ids name them."""


def phase_parts(
    decisions: list[dict[str, Any]],
    phases: tuple[str, ...] = PHASES,
    swaps: dict[str, list[tuple[float, float]]] | None = None,
) -> dict[str, Any]:
    """Where each run's time went, read from its own decisions (a run's item ids start with its
    name), so that a loss during swaps splits into scorers standing idle and scorers running
    slower: per run, its wall time (first batch started to last decision), the workers' summed
    model time, ``busy_share`` (model time over the workers' wall time) and
    ``model_items_per_s`` (items per second of model time: the scorers' own speed in that run).
    The run's rate is about workers x ``busy_share`` x ``model_items_per_s``; the two ratios
    compare the swap run with the mean of the runs before and after it. The idle time is the
    gaps between a worker's consecutive batches (``idle_s``, the longest gap); a gap during
    which that worker was switching adapters (``swaps``: worker -> (received at, activation
    seconds), from its log) counts in ``idle_s_in_swap_gaps``.

    >>> def d(item, worker, decided, scoring):
    ...     return {"item_id": item, "worker": worker, "decided_at": decided,
    ...             "scoring_s": scoring, "adapter_version": "a"}
    >>> parts = phase_parts([d("base1-1", "w", 1.0, 1.0), d("base1-2", "w", 1.0, 1.0),
    ...                      d("swap-1", "w", 4.0, 1.0), d("swap-2", "w", 4.0, 1.0),
    ...                      d("base2-1", "w", 6.0, 1.0), d("base2-2", "w", 6.0, 1.0)])
    >>> parts["phases"]["swap"]["busy_share"], parts["busy_share_ratio_during_swaps"]
    (1.0, 1.0)
    """
    out: dict[str, dict[str, float]] = {}
    for phase in phases:
        mine = [d for d in decisions if str(d["item_id"]).startswith(f"{phase}-")]
        per_worker = _batches(mine)
        batches = [b for bs in per_worker.values() for b in bs]
        if not batches:
            continue
        wall = max(b.decided for b in batches) - min(b.started for b in batches)
        model = sum(b.decided - b.started for b in batches)
        workers = len(per_worker)
        gaps = _gaps(per_worker, swaps or {})
        out[phase] = {
            "items": len(mine),
            "batches": len(batches),
            "wall_s": round(wall, 3),
            "model_s": round(model, 3),
            "busy_share": round(model / (workers * wall), 3) if wall > 0 else 1.0,
            "model_items_per_s": round(len(mine) / model, 2) if model > 0 else float("inf"),
            "idle_s": round(sum(g for g, _ in gaps), 3),
            "idle_gap_ms_max": round(max((g for g, _ in gaps), default=0.0) * 1000.0, 1),
            "idle_s_in_swap_gaps": round(sum(g for g, swap in gaps if swap), 3),
            "swap_gaps": sum(1 for _, swap in gaps if swap),
        }
    parts: dict[str, Any] = {"phases": out}
    bases = [out[p] for p in phases if p != "swap" and p in out]
    if "swap" in out and bases:
        for key in ("busy_share", "model_items_per_s"):
            base = sum(b[key] for b in bases) / len(bases)
            parts[f"{key}_ratio_during_swaps"] = round(out["swap"][key] / base, 3)
    return parts


def swap_figures(
    decisions: list[dict[str, Any]],
    received: dict[tuple[str, str], list[tuple[float, float]]],
    promotions: list[tuple[str, float]],
    workers: list[str],
    *,
    batch_max: int,
) -> dict[str, Any]:
    """Per promotion and worker, from the decisions (as read from the topic), what each worker
    logged of each adapter it switched to (received at, activation seconds) and the promotions
    (adapter, announced at):

    - ``first_decision_ms``: the announcement (the promote call) to the start of the first batch
      decided on the new adapter (its decisions come out ``scoring_s`` later: ``..._out_ms``);
    - ``notice_ms``: announcement to the worker hearing of it; activation: the worker's own
      fetch, verify, load and switch; ``wait_ms``: switched to that first batch's start;
    - ``batch_ms``: a worker's batch cycle (start to start of consecutive batches while items
      are waiting), what the batch in flight costs a swap; a cycle counts when the next batch
      was full (``batch_max`` items: they were waiting), so a worker waiting for items does
      not lengthen it;
    - ``late_batches``: batches that started after the worker heard of the promotion and still
      used the old adapter (a swap that waited for a second batch); it must be 0.
    """
    batches = _batches(decisions)
    first_ms, out_ms, notice_ms, wait_ms, swap_ms, all_workers = [], [], [], [], [], []
    activation_ms = [a * 1000.0 for v in received.values() for _, a in v]
    late = 0
    windows = zip(promotions, [*promotions[1:], (None, float("inf"))], strict=True)
    for (adapter, promoted_at), (_next, next_at) in windows:
        firsts = []
        for worker in workers:
            mine = batches.get(worker, [])
            on_new = [
                b for b in mine if b.adapter == adapter and promoted_at <= b.started < next_at
            ]
            if not on_new:
                continue
            first = on_new[0]
            firsts.append(first.decided)
            first_ms.append((first.started - promoted_at) * 1000.0)
            out_ms.append((first.decided - promoted_at) * 1000.0)
            heard = [r for r in received.get((worker, adapter), []) if r[0] >= promoted_at]
            if not heard:
                continue
            at, activation = min(heard)
            switched = at + activation
            notice_ms.append((at - promoted_at) * 1000.0)
            wait_ms.append((first.started - switched) * 1000.0)
            swap_ms.append((first.started - at) * 1000.0)
            late += sum(1 for b in mine if at < b.started < first.started)
        if len(firsts) == len(workers):
            all_workers.append(max(firsts) - promoted_at)
    cycles = [
        (b.started - a.started) * 1000.0
        for mine in batches.values()
        for a, b in itertools.pairwise(mine)
        if b.size >= batch_max
    ]
    if not first_ms or not all_workers or not swap_ms:
        raise RuntimeError("no swap could be measured: were decisions made during the swaps?")
    if not cycles:
        raise RuntimeError("no full batch: the workers were never busy (more --items)")
    swaps = np.maximum(np.array(swap_ms), 0.0)
    return {
        "first_decision_ms_p50": _p(first_ms, 50),
        "first_decision_ms_max": round(max(first_ms), 2),
        "first_decision_out_ms_p50": _p(out_ms, 50),
        "first_decision_out_ms_max": round(max(out_ms), 2),
        "batch_ms_p50": _p(cycles, 50),
        "notice_ms_p50": _p(notice_ms, 50),
        "notice_ms_max": round(max(notice_ms), 2),
        "wait_ms_p50": _p(wait_ms, 50),
        "wait_ms_max": round(max(wait_ms), 2),
        "late_batches": late,
        "swap_ms_p50": round(float(np.percentile(swaps, 50)), 2),
        "swap_ms_max": round(float(swaps.max()), 2),
        "swaps_measured": len(first_ms),
        # inside the swap alone: fetch from Redis, verify, load, activate
        "activation_ms_p50": _p(activation_ms, 50),
        "activation_ms_max": round(float(max(activation_ms)), 2),
        "all_workers_s": round(float(max(all_workers)), 3),
        "all_workers_s_p50": round(float(np.percentile(all_workers, 50)), 3),
    }
