"""`borderline demo`: the whole loop on the real corpus, with one command.

It starts the embedded broker and Redis (or uses the configured ones), fetches the corpus,
bootstraps the model on a small seed set when there is none, publishes policy v1 and makes the
bootstrap adapter serve it, and starts K classify workers, the label collector, the trainer and a
SIMULATED expert panel. Then it replays the corpus as a live ad stream at a set rate; partway
through it publishes policy v2 (unsolicited promotional mail, the corpus's hard-ham group, becomes
violating). The workers follow the new policy and widen review, the panel answers under v2, the
trainer trains a candidate adapter on v2's consensus labels, the kappa gate judges it against
the experts and promotes it, and every worker swaps it in without a restart.

A live view follows all of it; every process serves ``/metrics`` throughout (the demo itself reads
the drift signals from them). At the end, or on Ctrl-C, the output folder holds ``report.md``,
PNG plots (kappa over time and per adapter, review volume by reason, throughput, drift with the
policy change marked) and ``summary.json``; every process and port is gone.

Time is compressed: the review budget, the drift windows and the trainer's pace are set for a run
of a few minutes (``DEMO_SETTINGS``), unless the environment sets them. The stream is enriched
with promotional mail (``promo_share``) so that the policy change matters in a short run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from adapters.agreement import agreement_report, expert_ceiling
from adapters.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact
from adapters.dataset import LabeledItem, read_jsonl, sample
from adapters.labels import LabelStore
from adapters.policy import Policy, PolicyStore, load_policy
from adapters.registry import AdapterRegistry, RegistryError
from adapters.simulation import DEFAULT_PANEL, PROMOTIONAL_GROUP, parse_panel, policy_truth
from models.errors import BorderlineError
from models.manifest import ManifestError, ModelManifest
from streams.demo_report import decided_label, final_figures, pairs_kappa, write_report
from streams.launcher import WorkerProcess, free_port, start_worker
from streams.panel import PanelStats, run_simulated_panel
from streams.policy_commands import publish_policy
from streams.replay import open_reader, replay_items
from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["DEMO_SETTINGS", "DemoOptions", "DemoState", "compose_stream", "run_demo"]

BOOTSTRAP_TRAIN, BOOTSTRAP_HOLDOUT = 300, 300
ACTOR = "borderline demo"
SAMPLE_EVERY_S = 2.0
POLICIES = Path(__file__).resolve().parents[1] / "deploy" / "policies"

# compressed time for a run of minutes; each applies unless the environment set that field
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "review": {"labels_per_hour": 7200.0, "max_open": 500, "mine_every": 100},
    "drift": {"reference_size": 200, "window_size": 100},
}


class DemoError(BorderlineError):
    """The demo cannot run as asked (no policy file, a bad option)."""


@dataclass(frozen=True)
class DemoOptions:
    items: int = 1500
    rate: float = 8.0
    workers: int = 2
    seed: int = 0
    out: Path = Path("out/demo")
    live: bool = True
    policy_change: bool = True
    change_at: float = 0.25  # share of the stream replayed before v2 is published
    promo_share: float = 0.2  # share of promotional mail (hard-ham) in the stream
    panel: str = DEFAULT_PANEL
    per_item: int = 2  # reviewers per request (disagreements get a further opinion)
    min_kappa: float = 0.7
    margin: float = 0.02
    min_eval_items: int = 50
    min_new_labels: int = 60
    trainer_interval_s: float = 5.0
    settle_s: float = 300.0  # after the stream, how long to wait for the loop to close
    v1: Path = POLICIES / "v1.yaml"
    v2: Path = POLICIES / "v2.yaml"

    def check(self) -> None:
        if not 0.0 < self.change_at < 1.0:
            raise DemoError(f"--change-at {self.change_at}: a share of the stream in (0, 1)")
        if not 0.0 <= self.promo_share < 1.0:
            raise DemoError(f"promo_share {self.promo_share}: in [0, 1)")
        parse_panel(self.panel)  # a bad panel is one line, before anything starts
        for path in (self.v1, self.v2) if self.policy_change else (self.v1,):
            if not path.is_file():
                raise DemoError(f"policy file {path} not found (run from the repository root)")


@dataclass
class GateVerdict:
    at: float
    adapter_id: str
    policy_version: str
    passed: bool
    candidate_kappa: float | None
    incumbent_kappa: float | None
    required_kappa: float | None
    expert_labels: int | None
    eval_labels: int | None
    reason: str


@dataclass
class DemoState:
    """What the demo has seen so far; rendered live, plotted and summarised at the end."""

    items_total: int = 0
    items_in: int = 0
    started: float = field(default_factory=time.time)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    decided_at: dict[str, float] = field(default_factory=dict)  # when the demo saw it
    duplicates: int = 0
    review_requests: Counter[str] = field(default_factory=Counter)
    review_times: list[tuple[float, str]] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    workers: Counter[str] = field(default_factory=Counter)
    policy: str = "?"
    adapter: str = "?"
    first_adapter: str = "?"
    consensus: dict[str, dict[str, str]] = field(default_factory=dict)  # policy -> item -> label
    run_items: set[str] = field(default_factory=set)  # this run's item ids
    policy_events: list[tuple[float, str]] = field(default_factory=list)
    adapter_events: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[GateVerdict] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # policy -> expert labels
    open_requests: int = 0
    excluded: set[str] = field(default_factory=set)
    agreement: dict[str, float] = field(default_factory=dict)
    ceiling: float | None = None
    drift: dict[str, float] = field(default_factory=dict)
    drift_fired: set[str] = field(default_factory=set)
    samples: list[dict[str, Any]] = field(default_factory=list)
    metrics_scrapes: int = 0
    metrics_failures: int = 0

    def now(self) -> float:
        return time.time() - self.started

    def on_message(self, kind: str, doc: dict[str, Any]) -> None:
        t = self.now()
        if kind == "decision":
            if doc["item_id"] in self.decisions:
                self.duplicates += 1
            self.decisions[doc["item_id"]] = doc
            self.decided_at[doc["item_id"]] = t
            self.workers[doc["worker"]] += 1
        elif kind == "review":
            self.review_requests[doc["reason"]] += 1
            self.review_times.append((t, doc["reason"]))
        elif kind == "adapter":
            self.adapter_events.append({**doc, "t": t})
        else:
            self.dead_letters[doc.get("reason", "unknown")] += 1

    def actions(self) -> Counter[str]:
        return Counter(d["action"] for d in self.decisions.values())

    def rate(self) -> float:
        recent = [t for t in self.decided_at.values() if t >= self.now() - 10.0]
        return len(recent) / min(10.0, max(self.now(), 1e-9))

    def promotions(self) -> list[dict[str, Any]]:
        return [e for e in self.adapter_events if e["event"] == "promoted"]

    def labels_collected(self) -> int:
        return sum(self.labels.values())

    def recent_kappa(self, truth: dict[str, str], last: int = 200) -> float | None:
        """The live decisions' kappa against the simulated experts' truth under the policy each
        decision was made under (the last ``last`` decisions)."""
        recent = sorted(self.decisions, key=self.decided_at.__getitem__)[-last:]
        return truth_kappa([self.decisions[i] for i in recent], truth)

    def table(self, truth: dict[str, str]) -> Table:
        t = Table(title="borderline demo", show_header=False, min_width=72)
        a = self.actions()
        t.add_row("elapsed", f"{self.now():.0f} s")
        t.add_row(
            "items in / decided", f"{self.items_in}/{self.items_total} / {len(self.decisions)}"
        )
        t.add_row("decisions per second", f"{self.rate():.1f}")
        t.add_row("allow / block / review", f"{a['allow']} / {a['block']} / {a['review']}")
        t.add_row("policy / adapter", f"{self.policy} / {self.adapter}")
        t.add_row(
            "review requests",
            ", ".join(f"{k} {v}" for k, v in sorted(self.review_requests.items())) or "0",
        )
        t.add_row("review queue (open requests)", str(self.open_requests))
        t.add_row(
            "expert labels collected",
            ", ".join(f"{p}: {n}" for p, n in sorted(self.labels.items())) or "0",
        )
        t.add_row(
            "reviewer kappa vs consensus",
            ", ".join(
                f"{r} {k:.2f}{' (excluded)' if r in self.excluded else ''}"
                for r, k in sorted(self.agreement.items())
            )
            or "not enough shared items yet",
        )
        t.add_row("experts' pairwise kappa (ceiling)", _fmt(self.ceiling))
        t.add_row(
            "drift (input p, prediction p, concept rate)",
            " / ".join(_fmt(self.drift.get(s), 4) for s in ("input", "prediction", "concept"))
            + (f"  fired: {', '.join(sorted(self.drift_fired))}" if self.drift_fired else ""),
        )
        t.add_row("gate, last verdict", self.last_verdict())
        t.add_row("promotions", str(len(self.promotions())))
        t.add_row("kappa vs simulated truth (last 200)", _fmt(self.recent_kappa(truth)))
        t.add_row("dead letters", str(sum(self.dead_letters.values())))
        t.add_row("workers", ", ".join(f"{w} {n}" for w, n in sorted(self.workers.items())))
        return t

    def last_verdict(self) -> str:
        if not self.verdicts:
            return "none yet"
        v = self.verdicts[-1]
        word = "PROMOTED" if v.passed else "refused"
        return (
            f"{v.adapter_id} ({v.policy_version}) {word}: kappa {_fmt(v.candidate_kappa)} "
            f"vs required {_fmt(v.required_kappa)}, incumbent {_fmt(v.incumbent_kappa)}"
        )

    def log_line(self) -> str:
        a = self.actions()
        return (
            f"[{self.now():5.0f}s] in {self.items_in}/{self.items_total} decided "
            f"{len(self.decisions)} ({self.rate():.1f}/s) allow {a['allow']} block {a['block']} "
            f"review {a['review']} | policy {self.policy} adapter {self.adapter} | labels "
            f"{self.labels_collected()} open {self.open_requests} | gate: {self.last_verdict()}"
        )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if digits > 3 else f"{value:.3f}"


def truth_kappa(decisions: list[dict[str, Any]], truth: dict[str, str]) -> float | None:
    """The decisions' kappa against the simulated truth under each decision's policy."""
    pairs = [
        (policy_truth(d["item_id"], d["policy_version"], truth[d["item_id"]]), decided_label(d))
        for d in decisions
        if d["item_id"] in truth
    ]
    return pairs_kappa(pairs)


def compose_stream(
    data: list[LabeledItem],
    items: int,
    *,
    seed: int,
    promo_share: float,
    exclude: set[str],
    tag: str = "",
) -> list[LabeledItem]:
    """The live stream: ``items`` corpus items not in ``exclude``, a ``promo_share`` of them
    promotional mail (as many as the corpus has), shuffled with ``seed``; ids prefixed with
    ``tag:`` when given (a run against shared services must not collide with an earlier one).

    >>> groups = ("easy-ham-1", "hard-ham-1")
    >>> data = [LabeledItem(f"{g}/{i}", "t", 0) for g in groups for i in range(50)]
    >>> s = compose_stream(data, 20, seed=0, promo_share=0.25, exclude=set())
    >>> len(s), sum(i.item_id.startswith("hard-ham") for i in s)
    (20, 5)
    """
    pool = [i for i in data if i.item_id not in exclude and len(i.text) < 20_000]
    promo = [i for i in pool if i.item_id.startswith(PROMOTIONAL_GROUP)]
    other = [i for i in pool if not i.item_id.startswith(PROMOTIONAL_GROUP)]
    n_promo = min(len(promo), round(items * promo_share))
    chosen = sample(promo, n_promo, seed=seed) + sample(other, items - n_promo, seed=seed + 1)
    order = np.random.default_rng(seed).permutation(len(chosen))
    prefix = f"{tag}:" if tag else ""
    return [
        LabeledItem(f"{prefix}{chosen[k].item_id}", chosen[k].text, chosen[k].label) for k in order
    ]


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with the demo's compressed-time values where the environment set none."""
    update: dict[str, Any] = {}
    for section, values in DEMO_SETTINGS.items():
        current = getattr(settings, section)
        keep = current.model_fields_set
        changes = {k: v for k, v in values.items() if k not in keep}
        update[section] = current.model_copy(update=changes)
    return settings.model_copy(update=update)


def _model(settings: Settings, data: list[LabeledItem], seed: int, console: Console) -> set[str]:
    """Use the configured model, or bootstrap one; return the ids it was trained on."""
    try:
        manifest = ModelManifest.read(settings.model.dir)
        console.print(f"model {manifest.model_version} from {settings.model.dir}")
        return set(manifest.training.get("item_ids", []))
    except ManifestError:
        pass
    from adapters.bootstrap import bootstrap_model
    from adapters.training import TrainConfig

    console.print(f"no model in {settings.model.dir}: bootstrapping one (about a minute)")
    train = sample(data, BOOTSTRAP_TRAIN, seed=seed)
    holdout = sample(data, BOOTSTRAP_HOLDOUT, seed=seed + 1, exclude={i.item_id for i in train})
    result = bootstrap_model(
        train,
        holdout,
        settings.model.dir,
        config=TrainConfig(seed=seed, max_length=settings.model.max_length),
        policy_version=settings.policy.version,
        categories=[settings.policy.category],
    )
    ev = result.manifest.evaluation
    console.print(f"model {result.manifest.model_version}: held-out kappa {ev['kappa_int8']:.3f}")
    return {i.item_id for i in train}


def _port(wanted: int) -> int:
    """``wanted`` when it is free, else any free port (0: any free port)."""
    if wanted:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", wanted))
                return wanted
            except OSError:
                pass
    return free_port()


async def _prepare(settings: Settings, policy: Policy, reviewers: list[str]) -> str:
    """Publish v1, make the bootstrap adapter serve it, register the panel; the adapter id."""
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    prefix = settings.redis.key_prefix
    try:
        await publish_policy(settings, PolicyStore(redis, prefix), policy, ACTOR)
        await LabelStore(redis, prefix).register_reviewers(reviewers)
        manifest = ModelManifest.read(settings.model.dir, verify=False)
        boot = AdapterArtifact.load(
            settings.model.dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
        )
        registry = AdapterRegistry(redis, prefix)
        await registry.register(boot)
        active = await registry.active(policy.version)
        if active is None:
            with contextlib.suppress(RegistryError):
                await registry.promote(
                    boot.adapter_id, actor=ACTOR, reason="the bootstrap model serves v1"
                )
        return boot.adapter_id
    finally:
        await redis.aclose()


def _start_processes(
    settings: Settings, options: DemoOptions, stack: ExitStack, console: Console
) -> list[WorkerProcess]:
    out = options.out
    base = settings.metrics.port
    procs: list[WorkerProcess] = []

    def launch(name: str, role: str, offset: int, args: tuple[str, ...] = ()) -> None:
        port = _port(base + offset if base else 0)
        proc = start_worker(
            settings,
            name,
            out / f"{name}.log",
            metrics_port=port,
            wait=False,
            role=role,
            args=args,
        )
        stack.callback(proc.stop)
        procs.append(proc)

    for k in range(options.workers):
        launch(f"worker-{k + 1}", "worker", k)
    launch("collector", "collector", options.workers)
    launch(
        "trainer",
        "trainer",
        options.workers + 1,
        (
            "--interval",
            str(options.trainer_interval_s),
            "--min-new-labels",
            str(options.min_new_labels),
            "--min-kappa",
            str(options.min_kappa),
            "--margin",
            str(options.margin),
            "--min-eval-items",
            str(options.min_eval_items),
        ),
    )
    for p in procs:
        p.wait_ready()
    console.print(
        "metrics: "
        + ", ".join(f"{p.worker_id} http://127.0.0.1:{p.metrics_port}/metrics" for p in procs)
    )
    return procs


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo the way Ctrl-C does: cleanly, with a report."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(settings: Settings, options: DemoOptions) -> int:
    from adapters.corpus import fetch_spamassassin
    from streams.services import EmbeddedServices

    options.check()
    console = Console()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    state = DemoState()
    truth: dict[str, str] = {}
    interrupted = False
    summary: dict[str, Any] = {}
    with _interrupts_as_keyboard_interrupt(), ExitStack() as stack:
        try:
            tag = ""
            if settings.embedded:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bl-demo-"))
                endpoints = stack.enter_context(EmbeddedServices(state_dir=Path(tmp)))
                settings = settings.with_services(endpoints.bootstrap_servers, endpoints.redis_url)
                console.print(
                    f"embedded kafka {endpoints.bootstrap_servers}, redis {endpoints.redis_url}"
                )
            else:
                tag = f"demo-{uuid.uuid4().hex[:6]}"  # item ids never collide with a past run
            settings = demo_settings(settings)
            assert settings.kafka.bootstrap_servers
            corpus = fetch_spamassassin(settings.data_dir)
            data = read_jsonl(corpus.path)
            trained_on = _model(settings, data, options.seed, console)
            stream = compose_stream(
                data,
                min(options.items, len(data) - len(trained_on)),
                seed=options.seed + 2,
                promo_share=options.promo_share,
                exclude=trained_on,
                tag=tag,
            )
            truth = {i.item_id: ("violating" if i.label else "benign") for i in stream}
            state.run_items = set(truth)
            asyncio.run(
                ensure_topics(
                    settings.kafka.bootstrap_servers,
                    settings.kafka.topics.all(),
                    settings.kafka.partitions,
                )
            )
            if settings.worker.scorer_threads == 0:  # one core's worth each
                threads = max(1, (os.cpu_count() or 1) // options.workers)
                worker = settings.worker.model_copy(update={"scorer_threads": threads})
                settings = settings.model_copy(update={"worker": worker})
            panel = parse_panel(options.panel)
            v1 = load_policy(options.v1)
            v2 = load_policy(options.v2) if options.policy_change else None
            state.adapter = asyncio.run(_prepare(settings, v1, [r.reviewer_id for r in panel]))
            state.first_adapter = state.adapter
            state.policy = v1.version
            procs = _start_processes(settings, options, stack, console)
            console.print(
                f"{options.workers} workers, the label collector and the trainer ready; "
                f"SIMULATED expert panel {', '.join(r.reviewer_id for r in panel)}; replaying "
                f"{len(stream)} items at {options.rate:g}/s"
                + (f", policy {v2.version} after {options.change_at:.0%}" if v2 else "")
            )
            state.items_total = len(stream)
            state.started = time.time()
            state.policy_events.append((0.0, v1.version))
            asyncio.run(_drive(settings, options, stream, v2, state, truth, procs, console))
        except KeyboardInterrupt:
            interrupted = True
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
            console.print("interrupted: stopping workers, trainer and services")
        finally:
            if truth and state.decisions:
                with contextlib.suppress(Exception):
                    summary = asyncio.run(final_figures(settings, state, truth))
        # the ExitStack stops every process and service here
    signal.signal(signal.SIGINT, signal.default_int_handler)
    summary = _summary(state, truth, summary, options, interrupted)
    write_report(out, state, summary, truth)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print_json(json.dumps(summary))
    console.print(f"report: {out / 'report.md'}; summary: {out / 'summary.json'}")
    if interrupted:
        return 130
    closed = len(state.decisions) >= state.items_in and (
        not options.policy_change or summary["promotions_after_policy_change"] > 0
    )
    return 0 if closed else 1


def _summary(
    state: DemoState,
    truth: dict[str, str],
    final: dict[str, Any],
    options: DemoOptions,
    interrupted: bool,
) -> dict[str, Any]:
    change = next((t for t, v in state.policy_events[1:]), None)
    promoted = state.promotions()
    after = [p for p in promoted if change is not None and p["t"] >= change]
    first = after[0] if after else None
    verdict = next(
        (v for v in state.verdicts if first is not None and v.adapter_id == first["adapter_id"]),
        None,
    )
    return {
        "items_in": state.items_in,
        "items_decided": len(state.decisions),
        "duplicate_decisions": state.duplicates,
        "actions": dict(state.actions()),
        "review_requests": dict(state.review_requests),
        "dead_letters": sum(state.dead_letters.values()),
        "labels_collected": state.labels_collected(),
        "labels_by_policy": dict(state.labels),
        "reviewers_excluded": sorted(state.excluded),
        "expert_pairwise_kappa": state.ceiling,
        "promotions": len(promoted),
        "promotions_after_policy_change": len(after),
        "candidates_judged": len(state.verdicts),
        "rollbacks": sum(e["event"] == "rolled_back" for e in state.adapter_events),
        "policy_change_at_s": None if change is None else round(change, 1),
        "seconds_to_promotion": (
            None if first is None or change is None else round(first["t"] - change, 1)
        ),
        "labels_to_promotion": None if verdict is None else verdict.expert_labels,
        "gate_kappa_at_promotion": None if verdict is None else verdict.candidate_kappa,
        "incumbent_kappa_at_promotion": None if verdict is None else verdict.incumbent_kappa,
        "first_adapter": state.first_adapter,
        "final_adapter": state.adapter,
        "final_policy": state.policy,
        **final,
        "kappa_vs_simulated_truth_last_200": state.recent_kappa(truth),
        "decisions_per_s": round(len(state.decisions) / max(state.now(), 1e-9), 2),
        "elapsed_s": round(state.now(), 1),
        "workers": dict(state.workers),
        "seed": options.seed,
        "interrupted": interrupted,
    }


def _kinds(settings: Settings) -> dict[str, str]:
    topics = settings.kafka.topics
    return {
        topics.decisions: "decision",
        topics.review_requests: "review",
        topics.items_dlq: "dead",
        topics.review_labels_dlq: "dead",
        topics.adapter_events: "adapter",
    }


async def _watch(
    consumer: AIOKafkaConsumer, kinds: dict[str, str], state: DemoState, stop: asyncio.Event
) -> None:
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.value is not None:
                        with contextlib.suppress(ValueError, KeyError):
                            state.on_message(kinds[tp.topic], json.loads(record.value))
    finally:
        await consumer.stop()


def _scrape(port: int) -> dict[str, dict[str, float]]:
    """The drift series of one process's /metrics: {metric: {signal: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:  # our own endpoint
        text = response.read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("borderline_drift_statistic", "borderline_drift_detected"):
            for s in family.samples:
                out.setdefault(family.name, {})[s.labels["signal"]] = s.value
    return out


async def _follow(
    settings: Settings, state: DemoState, procs: list[WorkerProcess], stop: asyncio.Event
) -> None:
    """Redis (labels, agreement, registry, gate reports, policy) and the processes' /metrics,
    every couple of seconds; one timeline sample each time."""
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    prefix = settings.redis.key_prefix
    store = LabelStore(redis, prefix)
    registry = AdapterRegistry(redis, prefix)
    policies = PolicyStore(redis, prefix)
    seen_reports = 0
    try:
        while not stop.is_set():
            policy = await policies.active_version() or settings.policy.version
            if policy != state.policy:
                state.policy = policy
            active = await registry.active(policy)
            if active is not None:
                state.adapter = active.adapter_id
            votes = await store.votes_every_policy()  # keyed policy/item, as the collector
            counts: Counter[str] = Counter()
            for key, item_votes in votes.items():
                policy_of, item_id = key.split("/", 1)
                if item_id in state.run_items:  # not an earlier run's, on shared services
                    counts[policy_of] += len(item_votes)
            state.labels = dict(counts)
            state.excluded = await store.excluded()
            state.open_requests = await store.open_count(policy)
            report = agreement_report(votes, min_shared=settings.review.min_shared)
            state.agreement = {r.reviewer: r.kappa for r in report.reviewers if r.kappa is not None}
            state.ceiling = expert_ceiling(
                votes, state.excluded, min_shared=settings.review.min_shared
            )
            raw = await redis.lrange(f"{prefix}:gate:reports", seen_reports, -1)
            for item in raw:
                doc = json.loads(item)
                state.verdicts.append(
                    GateVerdict(
                        at=state.now(),
                        adapter_id=doc["adapter_id"],
                        policy_version=doc["policy_version"],
                        passed=bool(doc["passed"]),
                        candidate_kappa=doc.get("candidate_kappa"),
                        incumbent_kappa=doc.get("incumbent_kappa"),
                        required_kappa=doc.get("required_kappa"),
                        expert_labels=doc.get("expert_labels"),
                        eval_labels=doc.get("eval_labels"),
                        reason=doc.get("reason", ""),
                    )
                )
            seen_reports += len(raw)
            await _drift(state, procs)
            state.samples.append(
                {
                    "t": round(state.now(), 2),
                    "items_in": state.items_in,
                    "decided": len(state.decisions),
                    "labels": state.labels_collected(),
                    "open_requests": state.open_requests,
                    "policy": state.policy,
                    "adapter": state.adapter,
                    **{f"drift_{k}": v for k, v in state.drift.items()},
                }
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
    finally:
        await redis.aclose()


async def _drift(state: DemoState, procs: list[WorkerProcess]) -> None:
    """The drift gauges: the lowest p-value over the workers, the collector's concept rate."""
    values: dict[str, list[float]] = {}
    fired: set[str] = set()
    for p in procs:
        try:
            scraped = await asyncio.to_thread(_scrape, p.metrics_port)
            state.metrics_scrapes += 1
        except OSError:
            state.metrics_failures += 1
            continue
        for signal_name, value in scraped.get("borderline_drift_statistic", {}).items():
            values.setdefault(signal_name, []).append(value)
        fired |= {s for s, v in scraped.get("borderline_drift_detected", {}).items() if v > 0}
    for name, seen in values.items():
        state.drift[name] = max(seen) if name == "concept" else min(seen)
    state.drift_fired |= fired


async def _drive(
    settings: Settings,
    options: DemoOptions,
    stream: list[LabeledItem],
    v2: Policy | None,
    state: DemoState,
    truth: dict[str, str],
    procs: list[WorkerProcess],
    console: Console,
) -> None:
    assert settings.kafka.bootstrap_servers
    servers = settings.kafka.bootstrap_servers
    stop = asyncio.Event()
    stats = PanelStats()
    kinds = _kinds(settings)
    # positioned at the end before anything is produced: on shared services, nothing from an
    # earlier run is counted and nothing from this one is missed
    consumer = await open_reader(servers, list(kinds), from_end=True)
    tasks = [
        asyncio.create_task(_watch(consumer, kinds, state, stop)),
        asyncio.create_task(_follow(settings, state, procs, stop)),
        asyncio.create_task(
            run_simulated_panel(
                servers,
                settings.kafka.topics,
                parse_panel(options.panel),
                truth,
                per_item=options.per_item,
                seed=settings.review.seed,
                stop=stop,
                stats=stats,
                truth_for=policy_truth,
            )
        ),
    ]

    def sent(base: int) -> Any:
        def on_sent(count: int) -> None:
            state.items_in = base + count

        return on_sent

    async def produce() -> None:
        split = round(len(stream) * options.change_at) if v2 is not None else len(stream)
        topic = settings.kafka.topics.items
        await replay_items(servers, topic, stream[:split], rate=options.rate, on_sent=sent(0))
        if v2 is not None:
            assert settings.redis.url is not None
            redis = Redis.from_url(settings.redis.url.get_secret_value())
            try:
                store = PolicyStore(redis, settings.redis.key_prefix)
                await publish_policy(settings, store, v2, ACTOR)
            finally:
                await redis.aclose()
            state.policy_events.append((state.now(), v2.version))
            console.print(f"[{state.now():5.0f}s] published policy {v2.version}: {v2.description}")
            rest = stream[split:]
            await replay_items(servers, topic, rest, rate=options.rate, on_sent=sent(split))

    producer = asyncio.create_task(produce())
    view = Live(state.table(truth), console=console, refresh_per_second=2) if options.live else None

    def closed() -> bool:
        everything = len(state.decisions) >= len(stream) and producer.done()
        if v2 is None:
            return everything
        changed = state.policy_events[-1][0] if len(state.policy_events) > 1 else None
        adapted = any(changed is not None and p["t"] >= changed for p in state.promotions())
        return everything and adapted

    last_line = 0.0
    try:
        if view:
            view.start()
        deadline = time.time() + len(stream) / options.rate + options.settle_s
        while not closed() and time.time() < deadline:
            await asyncio.sleep(0.5)
            if producer.done() and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]
            if view:
                view.update(state.table(truth))
            elif time.time() - last_line >= 5:
                last_line = time.time()
                print(state.log_line(), flush=True)
        if not closed():
            console.print("the loop did not close before the deadline; reporting what happened")
        await asyncio.sleep(2 * SAMPLE_EVERY_S)  # one more look at Redis and the metrics
    finally:
        if view:
            view.update(state.table(truth))
            view.stop()
        else:
            print(state.log_line(), flush=True)
        stop.set()
        producer.cancel()
        await asyncio.gather(*tasks, producer, return_exceptions=True)
        console.print(f"simulated panel: {stats.requests} requests, {stats.labels} labels")
