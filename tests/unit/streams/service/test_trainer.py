"""Unit tests for streams.service.trainer: one `Trainer.step` over small in-memory fakes of its
ports (labels, policies, registry, verdicts and drift flags, adapter events, the model work, a
clock). Nothing triggered does nothing; a trigger with too few evaluation labels waits and says
why; a candidate that passes is promoted and announced, one that fails is refused and announced;
a bad automatic promotion is rolled back and announced; with nothing to roll back to, or a
rollback the registry refuses, the step returns with a reason instead of raising; a passing
candidate inside the cool-down is held. Training and scoring are fakes: the real ones are
tested in the model and integration layers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from adapters.adapt.candidate import Judgement
from adapters.adapt.gate import GateConfig
from adapters.adapt.verdicts import GateRecord, TrainerStatus
from adapters.labels.store import LabeledExample, ReviewedItem
from adapters.registry.artifact import AdapterArtifact, AdapterManifest
from adapters.registry.store import ActiveRecord, RegistryError
from streams.service.metrics import Metrics
from streams.service.trainer import ACTOR, Trainer, TrainerConfig, TrainerState
from streams.service.trainer_ports import TrainerPorts
from streams.wire.messages import AdapterEvent

V, B = "violating", "benign"
POLICY = "v1"
T0 = 1_000.0
GATE = GateConfig(min_kappa=0.5, margin=0.02, min_eval_items=10)


def _examples(prefix: str, n: int) -> list[LabeledExample]:
    return [LabeledExample(f"{prefix}{i}", f"text {i}", V if i % 2 else B, 3) for i in range(n)]


def _flip(labels: Sequence[str]) -> list[str]:
    return [B if label == V else V for label in labels]


# --- fakes of the ports -----------------------------------------------------------------------


@dataclass
class FakeLabels:
    train: list[LabeledExample]
    evaluation: list[LabeledExample]
    labelled_at: dict[str, float] = field(default_factory=dict)  # item -> first label

    audit_rate: float | None = 0.1
    audit_reason: str = "uncertain"  # the first reason of the audit-drawn items' requests
    marked: bool = True  # False: recorded before requests carried their draw

    async def dataset(
        self, policy: str, split: Literal["train", "eval"], *, eval_share: float = 0.4
    ) -> list[LabeledExample]:
        assert (split, eval_share) == ("train", 0.0), "the trainer reads every labelled item"
        return list(self.train + self.evaluation)

    async def reviewed_items(self, item_ids: Sequence[str]) -> dict[str, ReviewedItem]:
        """The evaluation items were drawn by the audit (whatever their first reason)."""
        drawn = {e.item_id for e in self.evaluation}
        return {
            i: ReviewedItem(
                i,
                "text",
                None,
                0.5,
                self.audit_reason if i in drawn else "uncertain",
                T0,
                audit_drawn=i in drawn and self.marked,
                audit_rate=self.audit_rate if i in drawn else None,
            )
            for i in item_ids
        }

    async def labelled_since(self, policy: str, since: float) -> list[str]:
        return [item for item, at in self.labelled_at.items() if at >= since]

    async def all_votes(self, policy: str) -> dict[str, dict[str, str]]:
        return {e.item_id: {"r1": e.label, "r2": e.label} for e in self.train + self.evaluation}

    async def excluded(self) -> set[str]:
        return set()


@dataclass
class FakePolicies:
    version: str | None = None

    async def active_version(self) -> str | None:
        return self.version


class FakeRegistry:
    """The registry's rules that matter here: promote records the previous adapter, rollback
    goes back to it and refuses when there is none (as `AdapterRegistry` does)."""

    def __init__(self) -> None:
        self.records: dict[str, ActiveRecord] = {}
        self.policy_of: dict[str, str] = {}
        self.refuse_rollbacks = False

    def seed(self, adapter_id: str, *, previous: str | None, actor: str, at: float) -> None:
        self.records[POLICY] = ActiveRecord(
            adapter_id=adapter_id,
            previous=previous,
            epoch=1,
            action="promote",
            actor=actor,
            reason="seeded",
            at=at,
            policy_version=POLICY,
        )

    async def active(self, policy: str) -> ActiveRecord | None:
        return self.records.get(policy)

    async def register(self, artifact: AdapterArtifact) -> bool:
        self.policy_of[artifact.adapter_id] = artifact.manifest.policy_version
        return True

    def _set(
        self, policy: str, target: str, action: str, actor: str, reason: str, now: float
    ) -> ActiveRecord:
        current = self.records.get(policy)
        record = ActiveRecord(
            adapter_id=target,
            previous=None if current is None else current.adapter_id,
            epoch=(0 if current is None else current.epoch) + 1,
            action=action,
            actor=actor,
            reason=reason,
            at=now,
            policy_version=policy,
        )
        self.records[policy] = record
        return record

    async def promote(
        self,
        adapter_id: str,
        *,
        actor: str,
        reason: str,
        policy: str | None = None,
        now: float | None = None,
    ) -> ActiveRecord:
        assert now is not None, "the trainer passes its clock"
        policy = policy or self.policy_of[adapter_id]
        return self._set(policy, adapter_id, "promote", actor, reason, now)

    async def rollback(
        self, policy: str, *, actor: str, reason: str, now: float | None = None
    ) -> ActiveRecord:
        current = self.records.get(policy)
        if self.refuse_rollbacks or current is None or current.previous is None:
            raise RegistryError(f"nothing to roll back to for policy {policy}")
        assert now is not None
        return self._set(policy, current.previous, "rollback", actor, reason, now)


@dataclass
class FakeVerdicts:
    flags: set[str] = field(default_factory=set)
    records: list[GateRecord] = field(default_factory=list)
    status: TrainerStatus | None = None

    async def record(self, report: GateRecord) -> None:
        self.records.append(report)

    async def drift_flags(self) -> set[str]:
        return set(self.flags)

    async def clear_flags(self) -> None:
        self.flags.clear()

    async def set_status(self, status: TrainerStatus) -> None:
        self.status = status


@dataclass
class FakeEvents:
    sent: list[AdapterEvent] = field(default_factory=list)

    async def announce(self, event: AdapterEvent) -> None:
        self.sent.append(event)


@dataclass
class FakeLab:
    """``candidate_right``: the candidate decides every evaluation item as the experts do
    (else it decides every one wrong); ``live_right``: likewise for the live adapter."""

    candidate_right: bool = True
    live_right: bool = True
    live_id: str = "v1-cand0"  # the adapter ``live_right`` is about; any other decides right
    missing: set[str] = field(default_factory=set)  # adapters whose artifact cannot be fetched
    wrong_on: set[str] = field(default_factory=set)  # items every adapter decides wrong
    trained: list[tuple[int, str | None]] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)  # adapters asked for live decisions
    judged_on: list[str] = field(default_factory=list)  # the items the gate's verdict rests on
    trained_on: list[str] = field(default_factory=list)

    async def prepare(self, active: ActiveRecord | None) -> tuple[AdapterArtifact | None, str]:
        return None, active.adapter_id if active else "base"

    async def train(
        self,
        examples: Sequence[LabeledExample],
        *,
        start: AdapterArtifact | None,
        policy_version: str,
    ) -> AdapterArtifact:
        self.trained.append((len(examples), None if start is None else start.adapter_id))
        self.trained_on = [e.item_id for e in examples]
        manifest = AdapterManifest(
            adapter_id=f"{policy_version}-cand{len(self.trained)}",
            base_model_version="m-test",
            policy_version=policy_version,
            labels=[B, V],
            files={},
            created_at=0.0,
        )
        return AdapterArtifact(manifest, Path("/nonexistent"))

    async def judge(
        self, candidate: AdapterArtifact, incumbent_id: str, evaluation: Sequence[LabeledExample]
    ) -> Judgement:
        self.judged_on = [e.item_id for e in evaluation]
        expert = [e.label for e in evaluation]
        incumbent = _flip(expert[:3]) + expert[3:]  # a fair incumbent: a few errors
        return Judgement(
            expert=expert,
            candidate=expert if self.candidate_right else _flip(expert),
            incumbent=incumbent,
            shadow_agreement=0.9,
        )

    async def live_decisions(
        self, adapter_id: str, examples: Sequence[LabeledExample]
    ) -> list[str]:
        self.scored.append(adapter_id)
        if adapter_id in self.missing:
            raise RegistryError(f"adapter {adapter_id} is not registered")
        right = self.live_right or adapter_id != self.live_id
        return [
            e.label if right and e.item_id not in self.wrong_on else _flip([e.label])[0]
            for e in examples
        ]


@dataclass
class World:
    labels: FakeLabels
    policies: FakePolicies = field(default_factory=FakePolicies)
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    verdicts: FakeVerdicts = field(default_factory=FakeVerdicts)
    events: FakeEvents = field(default_factory=FakeEvents)
    lab: FakeLab = field(default_factory=FakeLab)
    now: float = T0 + 3600.0
    metrics: Metrics = field(default_factory=Metrics)

    def trainer(self, *, min_new_labels: int = 10**6, cooldown_s: float = 60.0) -> Trainer:
        ports = TrainerPorts(
            labels=self.labels,
            policies=self.policies,
            registry=self.registry,
            verdicts=self.verdicts,
            events=self.events,
            lab=self.lab,
            clock=lambda: self.now,
            metrics=self.metrics,
            status=self.verdicts,
        )
        config = TrainerConfig(
            gate=GATE,
            min_new_labels=min_new_labels,
            cooldown_s=cooldown_s,
            default_policy=POLICY,
            eval_share=0.4,
            min_shared=2,
        )
        return Trainer(ports, config)

    def step(self, state: TrainerState | None = None, **kwargs: Any) -> Any:
        force = kwargs.pop("force", False)
        return asyncio.run(self.trainer(**kwargs).step(state or TrainerState(), force=force))

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def _world(*, train: int = 40, evaluation: int = 20) -> World:
    return World(FakeLabels(_examples("t", train), _examples("e", evaluation)))


# --- nothing to do, or not yet ------------------------------------------------------------------


def test_nothing_triggered_does_nothing() -> None:
    world = _world()
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    state = TrainerState()
    assert world.step(state) is None
    assert state.reason == "nothing triggered"
    assert world.lab.trained == [] and world.events.sent == [] and world.verdicts.records == []
    assert world.sample("borderline_training_labels", split="train") == 40
    assert world.sample("borderline_training_labels", split="eval") == 20


def test_a_trigger_with_too_few_evaluation_labels_waits_and_says_how_many_more() -> None:
    world = _world(train=60, evaluation=7)
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    state = TrainerState()
    assert world.step(state, min_new_labels=50) is None
    assert state.reason == "waiting for 3 more audit evaluation labels (7 of 10)"
    assert world.lab.trained == []
    assert state.trained_on == {}  # the labels still count as new next time


# --- a candidate ------------------------------------------------------------------------------


def test_a_candidate_that_passes_is_promoted_and_announced() -> None:
    world = _world()
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    world.verdicts.flags = {"input"}
    state = TrainerState()
    doc = world.step(state)
    assert doc is not None
    assert doc["triggers"] == ["drift:input"]
    assert doc["passed"] and doc["decision"] == "promote"
    assert doc["train_labels"] == 40 and doc["eval_labels"] == 20
    assert world.lab.trained == [(40, None)]
    assert state.trained_on == {POLICY: 40}
    active = world.registry.records[POLICY]
    assert (active.adapter_id, active.previous, active.actor) == (doc["adapter_id"], "boot", ACTOR)
    assert (
        active.reason
        == "gate passed: kappa 1.000, lower bound 1.000, over incumbent by at least 0.100"
    )
    assert [(e.event, e.adapter_id, e.actor) for e in world.events.sent] == [
        ("promoted", doc["adapter_id"], ACTOR)
    ]
    assert world.events.sent[0].at == world.now
    assert world.verdicts.flags == set()  # drift flags are spent by a promotion
    assert [r.adapter_id for r in world.verdicts.records] == [doc["adapter_id"]]
    assert world.verdicts.records[0].promoted
    assert state.reports == [doc]
    assert world.sample("borderline_candidates_total", verdict="promoted") == 1
    assert world.sample("borderline_gate_kappa", role="candidate") == 1.0


def test_a_policy_without_an_adapter_triggers_and_promotes_with_no_incumbent_record() -> None:
    world = _world()
    world.policies.version = "v1"
    doc = world.step()
    assert doc is not None and doc["triggers"] == ["policy_change"]
    assert world.registry.records[POLICY].previous is None
    assert [e.event for e in world.events.sent] == ["promoted"]


def test_a_refused_candidate_for_a_new_policy_is_not_trained_again_on_the_same_labels() -> None:
    """Seen in `make demo`: the v2 candidate was refused, and the trainer trained it again on the
    same labels every look until the run ended (same data, same seed, same verdict)."""
    world = _world()
    world.policies.version = "v1"
    world.lab.candidate_right = False
    state = TrainerState()
    doc = world.step(state)
    assert doc is not None and doc["triggers"] == ["policy_change"]
    assert doc["decision"] == "refuse"
    assert world.step(state) is None
    assert world.lab.trained == [(40, None)]  # once
    assert state.reason == (
        f"no candidate for {POLICY} passed the gate on 40 training labels; waiting for new labels"
    )
    world.labels.train.append(_examples("more", 1)[0])
    doc = world.step(state)
    assert doc is not None and doc["triggers"] == ["policy_change"]
    assert world.lab.trained == [(40, None), (41, None)]


def test_a_candidate_that_fails_is_refused_and_announced() -> None:
    world = _world()
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    world.verdicts.flags = {"concept"}
    world.lab.candidate_right = False
    doc = world.step(force=True)
    assert doc is not None
    assert not doc["passed"] and doc["decision"] == "refuse"
    assert doc["triggers"] == ["drift:concept", "forced"]
    assert world.registry.records[POLICY].adapter_id == "boot"  # the incumbent keeps serving
    assert [(e.event, e.reason) for e in world.events.sent] == [("refused", doc["reason"])]
    assert doc["reason"].startswith("failed: candidate kappa -1.000")
    assert world.verdicts.flags == {"concept"}  # not spent: the drift is still unanswered
    assert world.sample("borderline_candidates_total", verdict="refused") == 1


def test_a_passing_candidate_inside_the_cool_down_is_held_unannounced() -> None:
    world = _world()
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    world.now = T0 + 15
    doc = world.step(force=True)
    assert doc is not None
    assert doc["passed"] and doc["decision"] == "wait"
    assert "promotions wait 45 s more (cool-down 60 s)" in doc["decision_reason"]
    assert world.registry.records[POLICY].adapter_id == "boot"
    assert world.events.sent == []
    assert not world.verdicts.records[0].promoted
    # with no cool-down the same candidate goes live
    world.events.sent.clear()
    assert world.step(force=True, cooldown_s=0.0)["decision"] == "promote"


# --- the live adapter -------------------------------------------------------------------------


def _live_world(*, previous: str | None, live_right: bool = False) -> World:
    world = _world()
    world.registry.seed("v1-cand0", previous=previous, actor=ACTOR, at=T0)
    world.labels.labelled_at = {e.item_id: T0 + 5 for e in world.labels.evaluation}
    world.lab.live_right = live_right
    return world


def test_a_bad_automatic_promotion_is_rolled_back_and_announced() -> None:
    world = _live_world(previous="boot")
    out = world.step(force=True)  # a rollback goes first: nothing is trained
    assert out is not None and (out["event"], out["to"], out["live_kappa"]) == (
        "rolled_back",
        "boot",
        -1.0,
    )
    assert out["previous_better"]["value"] == 2.0 and out["previous_better"]["items"] == 20
    active = world.registry.records[POLICY]
    assert (active.adapter_id, active.action, active.actor) == ("boot", "rollback", ACTOR)
    assert active.reason.startswith(
        "the previous adapter is better on 20 audit labels since the promotion: previous - live"
        " 2.000"
    )
    assert [(e.event, e.adapter_id, e.reason) for e in world.events.sent] == [
        ("rolled_back", "boot", active.reason)
    ]
    assert world.lab.trained == []
    assert world.sample("borderline_adapter_rollbacks_total") == 1
    assert world.sample("borderline_live_kappa") == -1.0


def test_a_good_live_adapter_stays() -> None:
    world = _live_world(previous="boot", live_right=True)
    assert world.step() is None
    assert world.registry.records[POLICY].adapter_id == "v1-cand0"
    assert world.sample("borderline_live_kappa") == 1.0


def test_a_good_live_adapter_is_judged_on_audit_draws_not_on_the_items_it_was_unsure_of() -> None:
    """The items routed for being uncertain (here: every training item, labelled after the
    promotion, on which any model errs) are hard by construction; only the audit draws judge."""
    world = _live_world(previous="boot", live_right=True)
    world.labels.labelled_at.update({e.item_id: T0 + 5 for e in world.labels.train})
    world.lab.wrong_on = {e.item_id for e in world.labels.train}
    assert world.step() is None
    assert world.registry.records[POLICY].adapter_id == "v1-cand0"
    assert world.sample("borderline_live_kappa") == 1.0


def test_a_previous_adapter_only_a_little_better_is_not_a_rollback() -> None:
    world = _live_world(previous="boot", live_right=True)
    world.lab.wrong_on = {"e0"}  # both err on one item: the same; the live one ...
    world.lab.live_right = True
    world.labels.evaluation.append(LabeledExample("e-x", "x", V, 3))
    world.labels.labelled_at["e-x"] = T0 + 5
    assert world.step() is None
    assert world.events.sent == []


def test_labels_from_before_the_promotion_are_not_live_evidence() -> None:
    world = _live_world(previous="boot")
    world.labels.labelled_at = {e.item_id: T0 - 5 for e in world.labels.evaluation}
    assert world.step() is None
    assert world.events.sent == []


def test_too_few_audit_labels_since_the_promotion_are_not_evidence() -> None:
    world = _live_world(previous="boot")
    world.labels.labelled_at = {e.item_id: T0 + 5 for e in world.labels.evaluation[:9]}
    assert world.step() is None
    assert world.events.sent == []
    assert world.sample("borderline_live_kappa") == 0.0  # never set: no number on 9 of 10


def test_nothing_to_roll_back_to_is_an_alert_and_a_metric_not_an_exception() -> None:
    world = _live_world(previous=None)
    state = TrainerState()
    assert world.step(state) is None  # the registry would raise RegistryError on a rollback
    assert state.reason.startswith(
        "live kappa -1.000 (90% CI -1.000 to -0.600, 20 audit labels): upper bound < min_kappa"
        " 0.500, but nothing to roll back to: v1-cand0 stays"
    )
    assert state.reason.endswith("; nothing triggered")
    assert world.registry.records[POLICY].adapter_id == "v1-cand0"
    assert world.events.sent == []
    assert world.sample("borderline_adapter_rollbacks_refused_total") == 1


def test_nothing_to_roll_back_to_still_trains_when_triggered() -> None:
    world = _live_world(previous=None)
    doc = world.step(force=True)
    assert doc is not None and doc["decision"] == "promote"  # the better candidate replaces it
    assert world.registry.records[POLICY].previous == "v1-cand0"


def test_a_previous_adapter_that_cannot_be_scored_is_no_rollback_and_no_exception() -> None:
    world = _live_world(previous="boot")
    world.lab.missing = {"boot"}
    state = TrainerState()
    assert world.step(state) is None
    assert "nothing to roll back to" in state.reason
    assert world.registry.records[POLICY].adapter_id == "v1-cand0"
    assert world.sample("borderline_adapter_rollbacks_refused_total") == 1


def test_a_live_adapter_that_cannot_be_scored_is_a_reason_not_an_exception() -> None:
    world = _live_world(previous="boot")
    world.lab.missing = {"v1-cand0"}  # its artifact went away: main raised and the trainer exited
    state = TrainerState()
    assert world.step(state) is None
    assert state.reason == "nothing triggered"
    assert world.events.sent == []


@pytest.mark.parametrize("force", [False, True])
def test_a_rollback_the_registry_refuses_is_a_reason_not_an_exception(force: bool) -> None:
    world = _live_world(previous="boot")
    world.registry.refuse_rollbacks = True  # e.g. the previous adapter went away meanwhile
    state = TrainerState()
    assert world.step(state, force=force) is None
    assert "but the rollback failed: nothing to roll back to for policy v1" in state.reason
    assert world.events.sent == []
    assert world.sample("borderline_adapter_rollbacks_total") == 0


# --- what the trainer leaves for others to show -------------------------------------------------


def test_the_status_says_what_the_trainer_waits_for() -> None:
    world = _world(train=60, evaluation=7)
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    world.step(min_new_labels=50)
    status = world.verdicts.status
    assert status is not None and status.policy_version == POLICY
    assert status.reason == "waiting for 3 more audit evaluation labels (7 of 10)"
    assert status.adapter_id == "boot" and status.at == world.now


def test_while_a_round_runs_the_status_says_so_not_what_the_step_before_waited_for() -> None:
    """Seen in `bench adapt`: the live view said "waiting for 6 more audit evaluation labels (44
    of 50)" for the two minutes the first v2 candidate trained, because the status was written
    only when a step ended."""
    world = _world(train=40, evaluation=7)
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    trainer = world.trainer(min_new_labels=10)
    asyncio.run(trainer.step(TrainerState()))
    assert world.verdicts.status is not None
    assert world.verdicts.status.reason.startswith("waiting for 3 more audit evaluation labels")
    world.labels.evaluation += _examples("f", 5)
    seen: list[TrainerStatus | None] = []
    train = world.lab.train

    async def watched_train(*args: Any, **kwargs: Any) -> AdapterArtifact:
        seen.append(world.verdicts.status)
        return await train(*args, **kwargs)

    world.lab.train = watched_train  # type: ignore[method-assign]
    asyncio.run(trainer.step(TrainerState()))
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0].reason == (
        "training a candidate for v1 on 40 training labels (12 audit evaluation labels so far; "
        "it is judged on those there when it is trained; triggered: new_labels)"
    )
    assert seen[0].at == world.now and seen[0].adapter_id == "boot"
    assert world.verdicts.status is not None
    assert world.verdicts.status.reason.startswith("gate passed")  # the verdict, once done


def test_a_thin_class_among_the_audit_labels_waits_before_training() -> None:
    world = World(
        FakeLabels(_examples("t", 40), [LabeledExample(f"e{i}", "x", B, 3) for i in range(20)])
    )
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    state = TrainerState()
    assert world.step(state, force=True) is None
    assert state.reason == "waiting for 5 more violating audit evaluation labels (0 of 5)"
    assert world.lab.trained == []


def test_an_operators_adapter_is_shown_on_the_audit_draws_but_not_rolled_back() -> None:
    world = _live_world(previous="boot")
    world.registry.seed("v1-cand0", previous="boot", actor="deploy", at=T0)
    assert world.step() is None
    status = world.verdicts.status
    assert status is not None and status.live is not None and status.live["value"] == -1.0
    assert status.live_text is not None and status.live_text.startswith("-1.000 (90% CI")
    assert world.registry.records[POLICY].adapter_id == "v1-cand0"
    assert world.lab.scored == ["v1-cand0"]  # the previous one is scored only to act on


def test_too_few_audit_labels_are_shown_as_words() -> None:
    world = _live_world(previous="boot", live_right=True)
    world.labels.labelled_at = {e.item_id: T0 + 5 for e in world.labels.evaluation[:4]}
    world.step()
    status = world.verdicts.status
    assert status is not None and status.live_text == "not enough audit labels (4 of 10)"


def test_the_live_adapter_is_scored_again_only_when_its_evidence_changes() -> None:
    world = _live_world(previous="boot", live_right=True)
    trainer = world.trainer()
    asyncio.run(trainer.step(TrainerState()))
    asyncio.run(trainer.step(TrainerState()))
    assert world.lab.scored == ["v1-cand0", "boot"]
    world.labels.evaluation.append(LabeledExample("e-new", "x", V, 3))
    world.labels.labelled_at["e-new"] = T0 + 9
    asyncio.run(trainer.step(TrainerState()))
    assert world.lab.scored == ["v1-cand0", "boot"] * 2


def test_the_gate_judges_on_the_audit_draws_only_and_never_trains_on_them() -> None:
    """The defect: the evaluation split was mostly items the incumbent was unsure of (there two
    models of equal quality scored 0.15 and 0.24). Now the gate's items are the audit draws,
    whatever their first reason, and the rest trains."""
    world = _world()
    world.labels.audit_reason = "uncertain"  # drawn by the audit, sent as uncertain: still drawn
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    doc = world.step(force=True)
    assert doc is not None and doc["eval_labels"] == 20 and doc["train_labels"] == 40
    assert world.lab.judged_on == [e.item_id for e in world.labels.evaluation]
    assert world.lab.trained_on == [e.item_id for e in world.labels.train]


def test_the_gate_judges_on_the_audit_labels_there_when_the_candidate_is_trained() -> None:
    """Seen in bench adapt seed 1: the first v2 candidate's round started on 50 audit labels
    and took two minutes, in which they grew to 165; the gate judged on the 50 (paired lower
    bound -0.042 for a difference of 0.118), refused, and a second round was trained on 364
    more labels. The audit draws that came in meanwhile were never training data: the gate
    takes them too, and an item the candidate trained on never becomes evidence for it."""
    world = _world(train=40, evaluation=20)
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    train = world.lab.train

    async def labels_arrive_while_training(*args: Any, **kwargs: Any) -> AdapterArtifact:
        out = await train(*args, **kwargs)
        world.labels.evaluation += _examples("late", 30)  # audit draws labelled meanwhile
        world.labels.evaluation.append(world.labels.train.pop(0))  # trained on: not evidence
        return out

    world.lab.train = labels_arrive_while_training  # type: ignore[method-assign]
    doc = world.step(force=True)
    assert doc is not None and doc["train_labels"] == 40
    assert doc["eval_labels"] == 50
    assert world.lab.judged_on == [f"e{i}" for i in range(20)] + [f"late{i}" for i in range(30)]
    assert sum(doc["class_counts"].values()) == 50


def test_a_policy_change_during_training_leaves_the_gate_on_the_candidates_own_policy() -> None:
    world = _world(train=40, evaluation=20)
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    train = world.lab.train

    async def policy_changes_while_training(*args: Any, **kwargs: Any) -> AdapterArtifact:
        out = await train(*args, **kwargs)
        world.policies.version = "v9"
        world.labels.evaluation += _examples("v9-", 30)  # the fake does not split by policy
        return out

    world.lab.train = policy_changes_while_training  # type: ignore[method-assign]
    doc = world.step(force=True)
    assert doc is not None and doc["policy_version"] == POLICY and doc["eval_labels"] == 20
    assert world.lab.judged_on == [f"e{i}" for i in range(20)]


def test_requests_recorded_before_draws_were_marked_count_by_their_audit_reason() -> None:
    world = _world()
    world.labels.audit_rate = None  # an old record: no rate, weight 1 / the configured rate
    world.labels.audit_reason = "audit"
    world.labels.marked = False
    world.registry.seed("boot", previous=None, actor="deploy", at=T0)
    doc = world.step(force=True)
    assert doc is not None and doc["eval_labels"] == 20
