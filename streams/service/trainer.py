"""`borderline trainer`: the adaptation loop as its own process (it may run on a GPU machine).
It watches for a trigger (a policy version that has no adapter yet, enough new consensus labels,
or a drift flag a worker raised), trains a candidate LoRA adapter from the active one on the
training split of the current policy's consensus labels, registers it, judges it on the held-out
audit-drawn labelled items of the policy (a uniform sample of the stream, weighted by draw
probability; never trained on) and in shadow through the product's scorer, and promotes it only
when the kappa gate passes. Every verdict is kept in Redis with its report and announced on the
adapter-events topic; a promoted adapter that the previous one beats, by the gate's paired rule on
the audit items labelled since the promotion, is rolled back automatically.

What starts a round is `adapters.adapt.triggers`, what is done with the live adapter and the
candidate is `adapters.adapt.promotion`: pure functions. `Trainer.step` reads the world through
its ports (`streams.service.trainer_ports`, built once at start-up), calls them, and acts."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redis.asyncio import Redis

from adapters.adapt.gate import BENIGN, GateConfig, GateReport, evaluate
from adapters.adapt.promotion import (
    NO_CANDIDATE,
    Decision,
    LiveEvidence,
    PromotionRules,
    decide,
    watched,
)
from adapters.adapt.triggers import readiness, triggers
from adapters.adapt.verdicts import GateRecord, TrainerStatus
from adapters.labels.agreement import expert_ceiling
from adapters.labels.store import LabeledExample
from adapters.registry.store import RegistryError
from models.scorer import Scorer
from streams.service.health import Progress
from streams.service.lease import TrainerLease, lease_key
from streams.service.metrics import Health, Metrics, serve_metrics
from streams.service.outage import throttled_logs
from streams.service.retry import Retrying, is_infrastructure, open_redis
from streams.service.trainer_evidence import LiveJudge, World, look
from streams.service.trainer_ports import TrainerPorts, judge_live, open_ports
from streams.service.watchdog import Watchdog
from streams.wire.messages import AdapterEvent
from streams.wire.ready import TRAINER_READY
from streams.wire.settings import Settings

__all__ = [
    "ACTOR",
    "Trainer",
    "TrainerConfig",
    "TrainerState",
    "judge_live",
    "run_trainer",
    "trainer_step",
]

log = logging.getLogger(__name__)
ACTOR = "borderline trainer"


@dataclass
class TrainerState:
    trained_on: dict[str, int] = field(default_factory=dict)  # policy -> train labels used
    reports: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""  # what the last step did, or why it did nothing


@dataclass(frozen=True)
class TrainerConfig:
    """The trainer's knobs as plain values, from `Settings` at the entry point."""

    gate: GateConfig
    min_new_labels: int
    cooldown_s: float
    default_policy: str  # when no policy was ever published
    eval_share: float
    min_shared: int
    audit_rate: float = 0.02  # the draw probability of requests recorded without one
    seed: int = 0  # of the bootstrap intervals

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        gate: GateConfig | None = None,
        min_new_labels: int | None = None,
    ) -> TrainerConfig:
        knobs = settings.gate
        return cls(
            gate=gate
            or GateConfig(
                min_kappa=knobs.min_kappa, margin=knobs.margin, min_eval_items=knobs.min_eval_items
            ),
            min_new_labels=knobs.min_new_labels if min_new_labels is None else min_new_labels,
            cooldown_s=knobs.rollback_cooldown_s,
            default_policy=settings.policy.version,
            eval_share=settings.review.eval_share,
            min_shared=settings.review.min_shared,
            audit_rate=settings.review.audit_rate,
            seed=settings.review.seed,
        )

    @property
    def rules(self) -> PromotionRules:
        return PromotionRules(self.gate, cooldown_s=self.cooldown_s, actor=ACTOR)


class Trainer:
    def __init__(self, ports: TrainerPorts, config: TrainerConfig) -> None:
        self.ports = ports
        self.config = config
        self._seen: tuple[World, LiveEvidence | None] | None = None
        self._judge = LiveJudge(ports, config.gate, config.seed)

    async def step(self, state: TrainerState, *, force: bool = False) -> dict[str, Any] | None:
        """One look at the world: rolls a bad live adapter back, or trains and judges a
        candidate when triggered. Returns what it did (the gate report, or the rollback);
        None when it did nothing, with the reason in ``state.reason``. What it did or waits
        for, and the live adapter's kappa on the audit draws, is kept for others to show."""
        self._seen = None
        out = await self._step(state, force=force)
        await self._show(state.reason)
        return out

    async def _show(self, reason: str) -> None:
        """Leave ``reason`` and the live adapter's audit-draw kappa for others to show."""
        if self._seen is None or self.ports.status is None:
            return
        world, live = self._seen
        estimate = None if live is None else live.live
        await self.ports.status.set_status(
            TrainerStatus(
                at=self.ports.clock(),
                policy_version=world.version,
                reason=reason,
                adapter_id=None if world.active is None else world.active.adapter_id,
                live=None if estimate is None else estimate.as_dict(),
                live_text=None if estimate is None else estimate.describe(),
            )
        )

    async def _step(self, state: TrainerState, *, force: bool) -> dict[str, Any] | None:
        world = await self._look()
        fired = triggers(
            policy_published=world.published,
            adapter_active=world.active is not None,
            train_labels=len(world.train),
            trained_on=state.trained_on.get(world.version, 0),
            min_new_labels=self.config.min_new_labels,
            drift_flags=world.flags,
            forced=force,
        )
        mine = watched(world.active, ACTOR)
        live = await self._live(world, state, previous=mine) if world.active else None
        self._seen = (world, live)
        if not mine:  # shown, not acted on: an operator's adapter is theirs to undo
            live = None
        decision = self._decide(None, world, live)
        self._alert(decision)
        if decision.action == "roll_back":
            return await self._roll_back(world, decision, live, state)
        ready = readiness(
            fired,
            train_labels=len(world.train),
            eval_labels=len(world.evaluation),
            min_eval_items=self.config.gate.min_eval_items,
            eval_sides=(
                sum(e.label != BENIGN for e in world.evaluation),
                sum(e.label == BENIGN for e in world.evaluation),
            ),
            min_per_class=self.config.gate.min_per_class,
        )
        if not ready.train:
            state.reason = ready.reason
            tried = state.trained_on.get(world.version, 0)
            if not fired and world.published and world.active is None and tried:
                state.reason = (
                    f"no candidate for {world.version} passed the gate on {tried} training "
                    "labels; waiting for new labels"
                )
            if decision.reason != NO_CANDIDATE:  # a bad live adapter with nowhere to go
                state.reason = f"{decision.reason}; {ready.reason}"
                log.warning("%s", decision.reason)
            if fired:
                log.info("triggered (%s) but %s", ",".join(fired), ready.reason)
            return None
        # a round takes minutes on a busy CPU: say so now, not what the step before waited for
        await self._show(
            f"training a candidate for {world.version} on {len(world.train)} training labels "
            f"({len(world.evaluation)} audit evaluation labels so far; it is judged on those "
            f"there when it is trained; {ready.reason})"
        )
        candidate, report, record = await self._candidate(world, fired, state)
        decision = self._decide(report, world, live)
        record = record.model_copy(
            update={"decision": decision.action, "decision_reason": decision.reason}
        )
        await self._hold_lease()  # a trainer that lost the lease neither records nor promotes
        await self.ports.verdicts.record(record)
        await self._act(world.version, candidate, report, decision)
        doc = record.model_dump()
        state.reports.append(doc)
        state.reason = decision.reason
        log.info("candidate %s: %s (%s)", candidate, decision.action, decision.reason)
        return doc

    def _decide(
        self, report: GateReport | None, world: World, live: LiveEvidence | None
    ) -> Decision:
        active = world.active
        return decide(
            report,
            active=active,
            live=live,
            can_roll_back=live is not None and live.previous_better is not None,
            now=self.ports.clock(),
            rules=self.config.rules,
        )

    async def _hold_lease(self) -> None:
        if self.ports.lease is not None:
            await self.ports.lease.check()  # raises LeaseLost

    def _alert(self, decision: Decision) -> None:
        if decision.alert:
            log.warning("%s", decision.reason)
            if self.ports.metrics is not None:
                self.ports.metrics.rollbacks_refused.inc()

    async def _look(self) -> World:
        return await look(
            self.ports, default_policy=self.config.default_policy, audit_rate=self.config.audit_rate
        )

    async def _live(
        self, world: World, state: TrainerState, *, previous: bool
    ) -> LiveEvidence | None:
        live, trouble = await self._judge(world, previous=previous)
        if trouble is not None:
            state.reason = trouble
        return live

    async def _roll_back(
        self, world: World, decision: Decision, live: LiveEvidence | None, state: TrainerState
    ) -> dict[str, Any] | None:
        p = self.ports
        await self._hold_lease()
        try:
            record = await p.registry.rollback(
                world.version, actor=ACTOR, reason=decision.reason, now=p.clock()
            )
        except RegistryError as exc:  # e.g. the previous adapter went away meanwhile
            state.reason = f"{decision.reason}, but the rollback failed: {exc}"
            log.warning("%s", state.reason)
            return None
        if p.metrics is not None:
            p.metrics.rollbacks.inc()
        await self._announce("rolled_back", record.adapter_id, world.version, record.reason)
        state.reason = f"rolled back to {record.adapter_id}: {decision.reason}"
        log.warning("%s", state.reason)
        return {
            "event": "rolled_back",
            "to": record.adapter_id,
            "live_kappa": None if live is None else live.live.value,
            "previous_better": None
            if live is None or live.previous_better is None
            else live.previous_better.as_dict(),
        }

    async def _candidate(
        self, world: World, fired: list[str], state: TrainerState
    ) -> tuple[str, GateReport, GateRecord]:
        """Train a candidate from the active adapter, register it, judge it at the gate."""
        p = self.ports
        votes = await p.labels.all_votes(world.version)
        start, incumbent = await p.lab.prepare(world.active)
        started = p.clock()
        candidate = await p.lab.train(world.train, start=start, policy_version=world.version)
        state.trained_on[world.version] = len(world.train)
        await p.registry.register(candidate)
        evaluation, weights = await self._evidence_now(world)
        verdict = await p.lab.judge(candidate, incumbent, evaluation)
        excluded = await p.labels.excluded()
        report = evaluate(
            verdict.expert,
            verdict.candidate,
            verdict.incumbent,
            config=self.config.gate,
            weights=weights,
            seed=self.config.seed,
            expert_ceiling=expert_ceiling(votes, excluded, min_shared=self.config.min_shared),
            shadow_agreement=verdict.shadow_agreement,
        )
        record = GateRecord(
            adapter_id=candidate.adapter_id,
            policy_version=world.version,
            triggers=fired,
            expert_labels=sum(len(v) for v in votes.values()),  # every reviewer's, so far
            train_labels=len(world.train),
            eval_labels=len(evaluation),
            train_seconds=round(p.clock() - started, 1),
            **report.as_dict(),
        )
        if p.metrics is not None:
            _observe(p.metrics, report, record.train_seconds or 0.0)
        return candidate.adapter_id, report, record

    async def _evidence_now(self, world: World) -> tuple[list[LabeledExample], list[float]]:
        """The audit-drawn labelled items of the candidate's policy, with their weights, as
        they stand now that it is trained: a round takes minutes, and the audit labels that came
        in meanwhile were never training data (the split is by draw, fixed before any label).
        Items it trained on are left out whatever happened to them, and where the policy
        changed, or fewer items are there than at the start (a store rebuilt), the start's set
        is kept. One look, after training: not a second chance for a refused candidate."""
        later = await self._look()
        if later.version != world.version:
            return world.evaluation, world.weights
        trained = {e.item_id for e in world.train}
        rows = [
            (e, w)
            for e, w in zip(later.evaluation, later.weights, strict=True)
            if e.item_id not in trained
        ]
        if len(rows) < len(world.evaluation):
            return world.evaluation, world.weights
        return [e for e, _ in rows], [w for _, w in rows]

    async def _act(
        self, version: str, candidate: str, report: GateReport, decision: Decision
    ) -> None:
        """Promote or refuse the candidate, and say so on the adapter-events topic; a held
        candidate (``wait``) stays registered, unannounced."""
        p = self.ports
        if decision.action == "promote":
            await self._hold_lease()
            try:
                await p.registry.promote(
                    candidate, actor=ACTOR, reason=decision.reason, now=p.clock()
                )
            except RegistryError as exc:
                log.warning("promotion of %s failed: %s", candidate, exc)
                return
            await p.verdicts.clear_flags()
        if decision.action in ("promote", "refuse"):
            if p.metrics is not None:
                verdict = "promoted" if decision.action == "promote" else "refused"
                p.metrics.candidates.labels(verdict=verdict).inc()
            await self._announce(
                "promoted" if decision.action == "promote" else "refused",
                candidate,
                version,
                report.reason,
            )

    async def _announce(
        self,
        event: Literal["promoted", "rolled_back", "refused"],
        adapter_id: str,
        version: str,
        reason: str,
    ) -> None:
        await self.ports.events.announce(
            AdapterEvent(
                event=event,
                adapter_id=adapter_id,
                policy_version=version,
                actor=ACTOR,
                reason=reason,
                at=self.ports.clock(),
            )
        )


def _observe(metrics: Metrics, report: GateReport, train_seconds: float) -> None:
    metrics.training_seconds.observe(train_seconds)
    for role, value in (
        ("candidate", report.candidate_kappa),
        ("incumbent", report.incumbent_kappa),
        ("required", report.required_kappa),
        ("ceiling", report.expert_ceiling),
    ):
        if value is not None:
            metrics.gate_kappa.labels(role=role).set(value)


async def trainer_step(
    settings: Settings,
    redis: Redis,
    scorer: Scorer,
    state: TrainerState,
    *,
    min_new_labels: int | None = None,
    gate: GateConfig | None = None,
    out_dir: Path,
    force: bool = False,
    metrics: Metrics | None = None,
) -> dict[str, Any] | None:
    """One `Trainer.step` on ports opened for it and closed after (tests, scripts); the trainer
    process opens its ports once (`run_trainer`). Knobs not given come from ``settings.gate``."""
    config = TrainerConfig.from_settings(settings, gate=gate, min_new_labels=min_new_labels)
    async with open_ports(settings, redis, scorer, out_dir=out_dir, metrics=metrics) as ports:
        return await Trainer(ports, config).step(state, force=force)


def run_trainer(settings: Settings, *, config: TrainerConfig, once: bool = False) -> None:
    """The trainer process: its clients and ports built once, then, holding the one-trainer
    lease (`streams.service.lease`; a second trainer waits for it), a step every
    ``settings.gate.interval_s`` seconds (``once``: one forced step). A trainer that loses the
    lease stops stepping and waits for it again. Broker and Redis calls ride out an outage under
    the retry policy (untimed: training and judging take their time); a step that fails on one
    anyway (a rollback is never repeated inside a step) is tried again at the next interval,
    until the outage budget is spent: then one line, exit 2. A watchdog probes both meanwhile,
    so an idle trainer notices an outage too. ``/healthz`` fails when one step runs longer than
    ``settings.metrics.trainer_stuck_after_s``."""
    assert settings.redis.url is not None
    resilience = settings.resilience

    async def main() -> None:
        assert settings.redis.url is not None
        # SIGTERM (Kubernetes, compose) stops as Ctrl-C does: the lease is released on the way
        # out, so a waiting trainer takes over at once rather than after the lease's ttl
        this = asyncio.current_task()
        assert this is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
        progress = Progress(started_at=time.time(), needs_partitions=False)
        health = Health(progress, settings.metrics.trainer_stuck_after_s)
        metrics = serve_metrics(settings.metrics.port, settings.metrics.host, "trainer", health)
        redis = open_redis(settings.redis)
        scorer = Scorer.from_dir(settings.model.dir, threads=settings.worker.scorer_threads)
        retry = Retrying.for_process(settings, metrics=metrics, timed=False)
        state = TrainerState()
        out_dir = settings.worker.adapter_cache_dir / "candidates"
        lease = TrainerLease(
            redis, lease_key(settings.redis.key_prefix), ttl_s=settings.gate.lease_ttl_s
        )
        try:
            async with open_ports(
                settings, redis, scorer, out_dir=out_dir, metrics=metrics, retry=retry, lease=lease
            ) as ports:
                trainer = Trainer(ports, config)
                progress.loaded = True
                print(TRAINER_READY, flush=True)
                steps = _Steps(trainer, state, retry, settings, once, progress)

                def note(text: str) -> None:
                    if "held by" in text and text != progress.note:  # say why nothing happens
                        print(text, flush=True)
                    progress.note = text

                tasks = [
                    asyncio.ensure_future(lease.serve(steps, note)),
                    asyncio.ensure_future(Watchdog.for_services(settings, redis, retry).run()),
                ]
                try:  # until the steps end (once) or either raises (a spent budget)
                    await next(asyncio.as_completed(tasks))
                finally:
                    for task in tasks:
                        task.cancel()
                    # let them finish: the lease is released before Redis is closed
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await redis.aclose()

    with throttled_logs(resilience.log_interval_s):
        try:
            asyncio.run(main())
        except asyncio.CancelledError:  # SIGTERM
            log.info("trainer stopped")


@dataclass
class _Steps:
    trainer: Trainer
    state: TrainerState
    retry: Retrying
    settings: Settings
    once: bool
    progress: Progress

    async def __call__(self) -> None:
        while True:
            self.progress.begin(now=time.time())
            try:
                report = await self.trainer.step(self.state, force=self.once)
            except Exception as exc:
                if not is_infrastructure(exc):
                    raise
                self.retry.failed("redis", exc)  # raises once the budget is spent
                await asyncio.sleep(self.settings.gate.interval_s)
                continue
            finally:
                self.progress.end(now=time.time())
            if report is not None:
                print(json.dumps(report), flush=True)
            elif self.once:
                print(f"no candidate: {self.state.reason}", flush=True)
            if self.once:
                return
            await asyncio.sleep(self.settings.gate.interval_s)
