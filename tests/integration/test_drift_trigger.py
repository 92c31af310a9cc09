"""Drift as a training trigger, on the real broker and Redis, with real worker and collector
processes, the simulated expert panel and the real trainer step. A stationary stream (an iid
sample of the corpus) raises no drift flag and does not make the trainer train; an injected
drift (the stream turns to spam and promotional mail only) raises a flag within a few hundred
items, and the trainer step then trains a candidate with a ``drift:`` trigger.

The worker's detectors run with a small reference (200 items) and window (100) so that the test
is short, and with the DEFAULT thresholds, the ones whose false-alarm rates
tests/unit/test_drift.py measures. A check runs at the first batch end (batches of at most 16)
at least 100 items after the last, so 550 stationary items make exactly 3 checks of each worker
detector; Bonferroni bounds each check's false-alarm chance by its threshold (1e-3), so the
worker's detectors fail this test for nothing with a chance of at most about 0.6%. The
collector's concept detector sees the stationary phase too; its level rule is no p-value (the
disagreement rate on reviewed items, measured at 0.12 here, against 0.25)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.adapt.gate import GateConfig
from adapters.labels.dataset import LabeledItem, read_jsonl, sample
from adapters.labels.store import LabelStore
from adapters.offline.simulation import parse_panel
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import AdapterRegistry
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.demo.panel import PanelStats
from streams.demo.replay import replay_items
from streams.embedded.launcher import WorkerProcess, start_worker
from streams.service.drift_watch import flags_key
from streams.service.reader import read_topic
from streams.service.trainer import TrainerState, trainer_step
from tests.redis_support import redis_client

from .conftest import LOOP_PANEL, LOOP_REVIEW, LOOP_TRAINING, Stack, stop_all
from .helpers import samples, settle_labels

pytestmark = pytest.mark.integration

# small windows for a short test; thresholds left at their defaults (the measured ones)
DRIFT = {"reference_size": 200, "window_size": 100}
POLICY = "v1"  # no policy is published: workers and trainer use the configured default
STATIONARY = 550  # 200 reference + 3 checks of a 100-item window (see above)
DRIFTED = 400  # at most, fed in chunks until a flag appears
CHUNK = 20
NEVER = 10**9  # min_new_labels: new labels alone never trigger, only drift (or a policy) can
GATE = GateConfig(min_kappa=0.5, margin=0.02, min_eval_items=30)
WORKER_SIGNALS = {"input", "prediction"}  # the collector's is "concept"


def _drift_gauges(*processes: WorkerProcess) -> dict[str, float]:
    """The `borderline_drift_statistic` gauges of these processes, by signal (a worker sets
    input and prediction, the collector concept)."""
    return {
        labels["signal"]: float(f"{value:.3g}")
        for process in processes
        for labels, value in samples(process, "borderline_drift_statistic")
    }


def _alarm_lines(*logs: Path) -> list[str]:
    return [
        line.strip()
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if "drift detected" in line
    ]


async def _decided(stack: Stack, items: Sequence[LabeledItem], timeout_s: float = 120) -> None:
    """Wait until every item has a decision: the worker has fed it to its drift detectors
    (they see a batch before its decisions are delivered)."""
    ids = {i.item_id for i in items}
    decisions = await read_topic(
        stack.bootstrap_servers,
        stack.topics.decisions,
        until=lambda m: ids <= {d["item_id"] for d in m},
        timeout_s=timeout_s,
    )
    missing = ids - {d["item_id"] for d in decisions}
    assert not missing, f"{len(missing)} items undecided after {timeout_s}s"


async def _flags(redis: Redis, prefix: str) -> set[str]:
    raw = await redis.smembers(flags_key(prefix))
    return {f.decode() if isinstance(f, bytes) else str(f) for f in raw}


def test_injected_drift_triggers_training_and_a_stationary_stream_does_not(
    stack: Stack, corpus: Path, tmp_path: Path
) -> None:
    started = time.perf_counter()
    manifest = ModelManifest.read(stack.model_dir)
    boot = AdapterArtifact.load(
        stack.model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    assert boot.manifest.policy_version == POLICY
    panel = parse_panel(LOOP_PANEL)
    data = [i for i in read_jsonl(corpus) if len(i.text) < 20_000]
    truth = {i.item_id: ("violating" if i.label else "benign") for i in data}
    # stationary: an iid sample of the whole corpus, in random order (~31% spam)
    stationary = sample(data, STATIONARY, seed=5)
    # drifted: unseen items of spam and unsolicited promotional mail (hard-ham) only
    seen = {i.item_id for i in stationary}
    shifted = [i for i in data if i.item_id.startswith(("spam", "hard-ham"))]
    drifted = sample(shifted, DRIFTED, seed=6, exclude=seen)
    spam_share = sum(i.label for i in stationary) / len(stationary)
    print(
        f"\nstationary: {len(stationary)} items, {spam_share:.0%} spam; drifted: up to "
        f"{len(drifted)} items, {sum(i.label for i in drifted) / len(drifted):.0%} spam"
    )

    settings = stack.settings(review=LOOP_REVIEW, drift=DRIFT, gate=LOOP_TRAINING)
    prefix = settings.redis.key_prefix
    worker = stack.start_worker("w", review=LOOP_REVIEW, drift=DRIFT)
    collector = start_worker(
        settings, f"c-{stack.tag}", stack.tmp / "collector.log", role="collector"
    )
    stack.workers.append(collector)

    async def scenario() -> tuple[set[str], dict[str, Any]]:
        async with redis_client(stack.redis_url) as redis:
            return await drift_then_train(redis)

    async def drift_then_train(redis: Redis) -> tuple[set[str], dict[str, Any]]:
        labels = LabelStore(redis, prefix)
        registry = AdapterRegistry(redis, prefix)
        await labels.register_reviewers(r.reviewer_id for r in panel)
        await registry.register(boot)
        await registry.promote(boot.adapter_id, actor="deploy", reason="baseline")
        stop = asyncio.Event()
        stats = PanelStats()
        experts = asyncio.create_task(
            stack.simulated_panel(panel, truth, per_item=3, seed=7, stop=stop, stats=stats)
        )
        scorer = Scorer.from_dir(stack.model_dir, threads=2)
        state = TrainerState()

        async def step() -> dict[str, Any] | None:
            return await trainer_step(
                settings,
                redis,
                scorer,
                state,
                min_new_labels=NEVER,
                gate=GATE,
                out_dir=tmp_path / "candidates",
            )

        try:
            # phase 1: a stationary stream raises no flag and does not trigger training
            await replay_items(stack.bootstrap_servers, stack.topics.items, stationary)
            await _decided(stack, stationary)
            labelled = await settle_labels(labels, POLICY, timeout_s=60)
            train = await labels.dataset(POLICY, "train", eval_share=settings.review.eval_share)
            flags = await _flags(redis, prefix)
            print(
                f"stationary: {labelled} items labelled ({len(train)} train), panel {stats}; "
                f"drift statistics {_drift_gauges(worker, collector)}; flags {sorted(flags)}"
            )
            alarms = _alarm_lines(worker.log, collector.log)
            assert not flags, f"a stationary stream raised {flags}: {alarms}"
            # enough labels to train on: a None below means nothing triggered
            assert len(train) >= 20, f"only {len(train)} training labels"
            assert await step() is None

            # phase 2: injected drift raises a flag; the trainer trains on it
            fed = 0
            while not flags & WORKER_SIGNALS and fed < len(drifted):
                chunk = drifted[fed : fed + CHUNK]
                await replay_items(stack.bootstrap_servers, stack.topics.items, chunk)
                await _decided(stack, chunk)
                fed += len(chunk)
                flags = await _flags(redis, prefix)
            print(f"drift: flags {sorted(flags)} after {fed} drifted items (chunks of {CHUNK})")
            for line in _alarm_lines(worker.log, collector.log):
                print(f"  {line}")
            assert flags & WORKER_SIGNALS, f"no worker flag after {fed} drifted items"
            await settle_labels(labels, POLICY, timeout_s=60)
            report = await step()
            assert report is not None
            candidate = await registry.manifest(report["adapter_id"])
            assert candidate.parent_id == boot.adapter_id  # trained from the active adapter
            return flags, report
        finally:
            stop.set()
            await experts

    try:
        flags, report = asyncio.run(scenario())
    finally:
        stop_all([collector, worker], timeout_s=30)
    print(
        f"trainer: triggers {report['triggers']}, {report['train_labels']} train / "
        f"{report['eval_labels']} eval labels, trained in {report['train_seconds']}s; "
        f"gate {'passed' if report['passed'] else 'refused'}: {report['reason']}"
    )
    print(f"test run time {time.perf_counter() - started:.0f}s")
    # one drift trigger, naming every flag seen at the alarm (the collector's concept detector
    # may add one while the drifted items are labelled); new labels alone could not trigger
    drift_triggers = [t for t in report["triggers"] if t.startswith("drift:")]
    assert len(drift_triggers) == 1
    assert flags <= set(drift_triggers[0].removeprefix("drift:").split(","))
    assert set(report["triggers"]) == set(drift_triggers)
