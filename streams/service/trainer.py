"""`borderline trainer`: the adaptation loop as its own process (it may run on a GPU machine).
It watches for a trigger (a policy version that has no adapter yet, enough new consensus labels,
or a drift flag a worker raised), trains a candidate LoRA adapter from the active one on the
training split of the current policy's consensus labels, registers it, judges it on the held-out
evaluation split and in shadow through the product's scorer, and promotes it only when the kappa
gate passes. Every verdict is kept in Redis with its report and announced on the adapter-events
topic; a promoted adapter whose kappa on fresh expert labels falls below the gate's minimum is
rolled back automatically."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from adapters.adapt.candidate import decisions
from adapters.adapt.gate import GateConfig, GateReport, evaluate, should_roll_back
from adapters.labels.agreement import expert_ceiling, kappa
from adapters.labels.store import LabelStore
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.registry.store import AdapterRegistry, RegistryError
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.service.metrics import Metrics, serve_metrics
from streams.service.reader import read_recent
from streams.wire.messages import AdapterEvent, encode
from streams.wire.ready import TRAINER_READY
from streams.wire.settings import Settings

__all__ = ["TrainerState", "run_trainer", "trainer_step"]

log = logging.getLogger(__name__)
ACTOR = "borderline trainer"
MIN_TRAIN_LABELS = 20


@dataclass
class TrainerState:
    trained_on: dict[str, int] = field(default_factory=dict)  # policy -> train labels used
    reports: list[dict[str, Any]] = field(default_factory=list)


async def _announce(settings: Settings, event: AdapterEvent) -> None:
    assert settings.kafka.bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.kafka.topics.adapter_events, encode(event), key=event.adapter_id.encode()
        )
    finally:
        await producer.stop()


async def trainer_step(
    settings: Settings,
    redis: Redis,
    scorer: Scorer,
    state: TrainerState,
    *,
    min_new_labels: int,
    gate: GateConfig,
    out_dir: Path,
    force: bool = False,
    metrics: Metrics | None = None,
) -> dict[str, Any] | None:
    """One look at the world; trains and judges a candidate when triggered. Returns the report."""
    from adapters.adapt.candidate import judge, train_candidate

    prefix = settings.redis.key_prefix
    registry = AdapterRegistry(redis, prefix)
    labels = LabelStore(redis, prefix)
    policy = await PolicyStore(redis, prefix).active()
    version = policy.version if policy else settings.policy.version
    active = await registry.active(version)
    train = await labels.dataset(version, "train", eval_share=settings.review.eval_share)
    evaluation = await labels.dataset(version, "eval", eval_share=settings.review.eval_share)
    drift = await redis.smembers(f"{prefix}:drift:flags")
    if metrics is not None:
        metrics.training_labels.labels(split="train").set(len(train))
        metrics.training_labels.labels(split="eval").set(len(evaluation))
    new_labels = len(train) - state.trained_on.get(version, 0)
    triggers = []
    if active is None and policy is not None:
        triggers.append("policy_change")
    if new_labels >= min_new_labels:
        triggers.append("new_labels")
    if drift:
        names = sorted(d.decode() if isinstance(d, bytes) else str(d) for d in drift)
        triggers.append("drift:" + ",".join(names))
    if force:
        triggers.append("forced")

    # automatic rollback: the live adapter against fresh expert labels
    if active is not None and active.action == "promote" and active.actor == ACTOR:
        since = set(await labels.labelled_since(version, active.at))
        fresh = [e for e in evaluation if e.item_id in since]  # never trained on, labelled since
        if fresh:
            decided = await judge_live(scorer, active.adapter_id, fresh, registry, settings)
            live_kappa = kappa([e.label for e in fresh], decided)
            if metrics is not None and live_kappa is not None:
                metrics.live_kappa.set(live_kappa)
            if live_kappa is not None and should_roll_back(
                live_kappa,
                min_kappa=gate.min_kappa,
                min_items=gate.min_eval_items,
                items=len(fresh),
            ):
                reason = f"live kappa {live_kappa:.3f} < {gate.min_kappa} on {len(fresh)} labels"
                record = await registry.rollback(version, actor=ACTOR, reason=reason)
                if metrics is not None:
                    metrics.rollbacks.inc()
                await _announce(
                    settings,
                    AdapterEvent(
                        event="rolled_back",
                        adapter_id=record.adapter_id,
                        policy_version=version,
                        actor=ACTOR,
                        reason=record.reason,
                        at=time.time(),
                    ),
                )
                return {"event": "rolled_back", "to": record.adapter_id, "live_kappa": live_kappa}
    if not triggers or len(train) < MIN_TRAIN_LABELS:
        return None
    if len(evaluation) < gate.min_eval_items:
        # a candidate that cannot be judged is not worth the training time: wait for labels
        log.info(
            "triggered (%s) but %d evaluation labels < %d: waiting for expert labels",
            ",".join(triggers),
            len(evaluation),
            gate.min_eval_items,
        )
        return None
    votes = await labels.all_votes(version)

    manifest = ModelManifest.read(settings.model.dir, verify=False)
    start = None
    if active is not None:
        start = await registry.fetch(
            active.adapter_id, out_dir / active.adapter_id, expected_base=manifest.model_version
        )
    elif (settings.model.dir / BOOTSTRAP_ARTIFACT).is_dir():
        start = AdapterArtifact.load(
            settings.model.dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
        )
    incumbent_id = active.adapter_id if active else scorer.adapter_version
    if incumbent_id not in scorer.loaded_adapters and start is not None:
        scorer.load_adapter(start.adapter_id, start.path)
    started = time.time()
    candidate = await asyncio.to_thread(
        train_candidate,
        settings.model.dir,
        train,
        out_dir,
        start_from=start,
        policy_version=version,
        seed=settings.review.seed,
        progress=True,
    )
    state.trained_on[version] = len(train)
    await registry.register(candidate)
    assert settings.kafka.bootstrap_servers
    recent = await read_recent(settings.kafka.bootstrap_servers, settings.kafka.topics.items, 300)
    recent_texts = [m["text"] for m in recent if isinstance(m.get("text"), str)]
    verdict = await asyncio.to_thread(
        judge, scorer, candidate, incumbent_id, evaluation, recent_texts
    )
    excluded = await labels.excluded()
    ceiling = expert_ceiling(votes, excluded, min_shared=settings.review.min_shared)
    report: GateReport = evaluate(
        verdict.expert,
        verdict.candidate,
        verdict.incumbent,
        config=gate,
        expert_ceiling=ceiling,
        shadow_agreement=verdict.shadow_agreement,
    )
    doc = {
        "adapter_id": candidate.adapter_id,
        "policy_version": version,
        "triggers": triggers,
        "expert_labels": sum(len(v) for v in votes.values()),  # every reviewer's, so far
        "train_labels": len(train),
        "eval_labels": len(evaluation),
        "train_seconds": round(time.time() - started, 1),
        **report.as_dict(),
    }
    if metrics is not None:
        metrics.training_seconds.observe(doc["train_seconds"])
        metrics.candidates.labels(verdict="promoted" if report.passed else "refused").inc()
        for role, value in (
            ("candidate", report.candidate_kappa),
            ("incumbent", report.incumbent_kappa),
            ("required", report.required_kappa),
            ("ceiling", report.expert_ceiling),
        ):
            if value is not None:
                metrics.gate_kappa.labels(role=role).set(value)
    await redis.set(f"{prefix}:gate:{candidate.adapter_id}", json.dumps(doc))
    await redis.rpush(f"{prefix}:gate:reports", json.dumps(doc))
    if report.passed:
        with_reason = (
            f"gate passed: kappa {report.candidate_kappa:.3f} >= {report.required_kappa:.3f}"
        )
        try:
            await registry.promote(candidate.adapter_id, actor=ACTOR, reason=with_reason)
        except RegistryError as exc:
            log.warning("promotion of %s failed: %s", candidate.adapter_id, exc)
        await redis.delete(f"{prefix}:drift:flags")
    await _announce(
        settings,
        AdapterEvent(
            event="promoted" if report.passed else "refused",
            adapter_id=candidate.adapter_id,
            policy_version=version,
            actor=ACTOR,
            reason=report.reason,
            at=time.time(),
        ),
    )
    state.reports.append(doc)
    log.info("candidate %s: %s", candidate.adapter_id, report.reason)
    return doc


async def judge_live(
    scorer: Scorer,
    adapter_id: str,
    examples: list[Any],
    registry: AdapterRegistry,
    settings: Settings,
) -> list[str]:
    manifest = ModelManifest.read(settings.model.dir, verify=False)
    if adapter_id not in scorer.loaded_adapters:
        artifact = await registry.fetch(
            adapter_id,
            settings.worker.adapter_cache_dir / adapter_id,
            expected_base=manifest.model_version,
        )
        scorer.load_adapter(adapter_id, artifact.path)
    return decisions(scorer, adapter_id, [e.text for e in examples])


def run_trainer(
    settings: Settings,
    *,
    interval_s: float,
    min_new_labels: int,
    gate: GateConfig,
    once: bool = False,
) -> None:
    assert settings.redis.url is not None

    async def main() -> None:
        assert settings.redis.url is not None
        redis = Redis.from_url(settings.redis.url.get_secret_value())
        scorer = Scorer.from_dir(settings.model.dir, threads=settings.worker.scorer_threads)
        metrics = serve_metrics(settings.metrics.port, settings.metrics.host, "trainer")
        state = TrainerState()
        out_dir = settings.worker.adapter_cache_dir / "candidates"
        print(TRAINER_READY, flush=True)
        try:
            while True:
                report = await trainer_step(
                    settings,
                    redis,
                    scorer,
                    state,
                    min_new_labels=min_new_labels,
                    gate=gate,
                    out_dir=out_dir,
                    force=once,
                    metrics=metrics,
                )
                if report is not None:
                    print(json.dumps(report), flush=True)
                elif once:
                    print("no candidate: nothing triggered, or too few expert labels", flush=True)
                if once:
                    return
                await asyncio.sleep(interval_s)
        finally:
            await redis.aclose()

    asyncio.run(main())
