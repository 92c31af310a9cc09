"""What the trainer judges on: one look at the policy's labels (the audit-drawn items, with their
weights, for judging; every other consensus-labelled item for training) and the live adapter on
the audit draws labelled since it went live, next to the previous adapter on the same items
(`adapters.adapt.estimate`). Split from `streams.service.trainer`, which decides and acts."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from adapters.adapt.estimate import Estimate, draw_weight, estimate_kappa, paired_difference
from adapters.adapt.gate import GateConfig
from adapters.adapt.promotion import LiveEvidence
from adapters.labels.store import LabeledExample
from adapters.registry.store import ActiveRecord
from models.errors import BorderlineError
from streams.service.trainer_ports import TrainerPorts

__all__ = ["LiveJudge", "World", "look"]

log = logging.getLogger("streams.service.trainer")


@dataclass(frozen=True)
class World:
    """What one look saw: the policy version, whether one was published, its active adapter,
    the consensus labels for training and for judging (the audit-drawn items, with their
    weights, 1 / draw probability), the raised drift flags."""

    version: str
    published: bool
    active: ActiveRecord | None
    train: list[LabeledExample]
    evaluation: list[LabeledExample]
    flags: set[str]
    weights: list[float] = field(default_factory=list)


async def look(ports: TrainerPorts, *, default_policy: str, audit_rate: float) -> World:
    """The policy in force, its active adapter, drift flags, and its consensus labels split into
    training items and audit-drawn judging items (``audit_rate``: the draw probability of
    requests recorded without one)."""
    p = ports
    published = await p.policies.active_version()
    version = published or default_policy
    labelled = await p.labels.dataset(version, "train", eval_share=0.0)  # every item
    reviewed = await p.labels.reviewed_items([e.item_id for e in labelled])
    weight_of: dict[str, float] = {}
    for e in labelled:
        item = reviewed.get(e.item_id)
        weight = None
        if item is not None:
            weight = draw_weight(
                item.audit_drawn,
                item.audit_rate,
                item.reason,
                default_rate=audit_rate,
            )
        if weight is not None:
            weight_of[e.item_id] = weight
    train = [e for e in labelled if e.item_id not in weight_of]
    evaluation = [e for e in labelled if e.item_id in weight_of]
    if p.metrics is not None:
        p.metrics.training_labels.labels(split="train").set(len(train))
        p.metrics.training_labels.labels(split="eval").set(len(evaluation))
    return World(
        version=version,
        published=published is not None,
        active=await p.registry.active(version),
        train=train,
        evaluation=evaluation,
        flags=await p.verdicts.drift_flags(),
        weights=[weight_of[e.item_id] for e in evaluation],
    )


class LiveJudge:
    """The live adapter judged on the audit draws since it went live, remembering the last
    judgement and what it rested on."""

    def __init__(self, ports: TrainerPorts, gate: GateConfig, seed: int) -> None:
        self.ports = ports
        self.gate = gate
        self.seed = seed
        self._judged: tuple[tuple[object, ...], LiveEvidence | None] | None = None

    async def __call__(
        self, world: World, *, previous: bool
    ) -> tuple[LiveEvidence | None, str | None]:
        """The live adapter on the audit items labelled since it went live, and (``previous``)
        the previous adapter on the same items (None: no such labels yet, or the live adapter
        could not be scored: said in the log and in the second value, never raised). Scored
        again only when the items or the adapters changed since the last call."""
        assert world.active is not None
        active = world.active
        since = set(await self.ports.labels.labelled_since(world.version, active.at))
        rows = [k for k, e in enumerate(world.evaluation) if e.item_id in since]
        if not rows:
            return None, None
        fresh = [world.evaluation[k] for k in rows]
        weights = [world.weights[k] for k in rows]
        basis = (active.adapter_id, active.previous, previous, *(e.item_id for e in fresh))
        if self._judged is not None and self._judged[0] == basis:
            return self._judged[1], None
        judged, trouble = await self._judge(world, fresh, weights, previous=previous)
        self._judged = (basis, judged)
        return judged, trouble

    async def _judge(
        self, world: World, fresh: list[LabeledExample], weights: list[float], *, previous: bool
    ) -> tuple[LiveEvidence | None, str | None]:
        assert world.active is not None
        active, gate = world.active, self.gate
        expert = [e.label for e in fresh]
        knobs = functools.partial(
            _paired_or_single,
            min_items=gate.min_eval_items,
            confidence=gate.confidence,
            resamples=gate.resamples,
            seed=self.seed,
        )
        try:
            decided = await self.ports.lab.live_decisions(active.adapter_id, fresh)
        except BorderlineError as exc:
            trouble = f"cannot judge the live adapter {active.adapter_id}: {exc}"
            log.warning("%s", trouble)
            return None, trouble
        live = knobs(expert, decided, None, weights)
        if self.ports.metrics is not None and live.value is not None:
            self.ports.metrics.live_kappa.set(live.value)
        before_id = active.previous
        if not previous or before_id is None or before_id == active.adapter_id:
            return LiveEvidence(live), None
        try:
            before = await self.ports.lab.live_decisions(before_id, fresh)
        except BorderlineError as exc:
            log.warning("cannot score the previous adapter %s: %s", before_id, exc)
            return LiveEvidence(live), None
        better = knobs(expert, before, decided, weights)
        return LiveEvidence(live, previous_better=better), None


def _paired_or_single(
    expert: list[str],
    model: list[str],
    other: list[str] | None,
    weights: list[float],
    *,
    min_items: int,
    confidence: float,
    resamples: int,
    seed: int,
) -> Estimate:
    """kappa(model), or kappa(model) - kappa(other) on the same items (paired)."""
    if other is None:
        return estimate_kappa(
            expert,
            model,
            weights,
            min_items=min_items,
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
    return paired_difference(
        expert,
        model,
        other,
        weights,
        min_items=min_items,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )
