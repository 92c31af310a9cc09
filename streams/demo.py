"""`borderline demo`: the classify stream end to end on the real corpus, with one command. It
starts the embedded broker and Redis (or uses the configured ones), fetches the corpus, builds
the model if there is none, starts K classify workers, replays the corpus as a live ad stream at
a set rate, watches decisions, review requests and dead letters arrive, and writes a summary.

The adaptation loop (expert panel, LoRA updates, the kappa gate, hot swaps) joins this command as
those parts land; today it shows the first half of the loop: classify and route to review.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from adapters.agreement import agreement_report, kappa
from adapters.dataset import LabeledItem, read_jsonl, sample
from adapters.labels import LabelStore
from adapters.simulation import DEFAULT_PANEL, SimulatedReviewer, parse_panel
from models.manifest import ManifestError, ModelManifest
from streams.launcher import WorkerProcess, start_worker
from streams.panel import run_simulated_panel
from streams.replay import open_reader, replay_items
from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["DemoState", "run_demo"]

BOOTSTRAP_TRAIN, BOOTSTRAP_HOLDOUT = 300, 300


@dataclass
class DemoState:
    """What the demo has seen so far; rendered live and summarised at the end."""

    items_in: int = 0
    started: float = field(default_factory=time.time)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    review_requests: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    workers: Counter[str] = field(default_factory=Counter)
    labels: int = 0
    excluded: set[str] = field(default_factory=set)
    agreement: dict[str, float] = field(default_factory=dict)
    ceiling: float | None = None

    def on_message(self, topic_kind: str, doc: dict[str, Any]) -> None:
        if topic_kind == "decision":
            if doc["item_id"] in self.decisions:
                self.duplicates += 1
            self.decisions[doc["item_id"]] = doc
            self.workers[doc["worker"]] += 1
        elif topic_kind == "review":
            self.review_requests[doc["reason"]] += 1
        else:
            self.dead_letters[doc["reason"]] += 1

    def actions(self) -> Counter[str]:
        return Counter(d["action"] for d in self.decisions.values())

    def rate(self) -> float:
        elapsed = time.time() - self.started
        return len(self.decisions) / elapsed if elapsed > 0 else 0.0

    def table(self, truth: dict[str, int]) -> Table:
        t = Table(title="borderline demo", show_header=False, min_width=60)
        actions = self.actions()
        t.add_row("items in / decided", f"{self.items_in} / {len(self.decisions)}")
        t.add_row("decisions per second", f"{self.rate():.1f}")
        t.add_row(
            "allow / block / review",
            f"{actions['allow']} / {actions['block']} / {actions['review']}",
        )
        t.add_row(
            "review requests", ", ".join(f"{k} {v}" for k, v in self.review_requests.items()) or "0"
        )
        t.add_row("dead letters", str(sum(self.dead_letters.values())))
        t.add_row("expert labels collected", str(self.labels))
        t.add_row(
            "reviewer kappa vs consensus",
            ", ".join(
                f"{r} {k:.2f}{' (excluded)' if r in self.excluded else ''}"
                for r, k in sorted(self.agreement.items())
            )
            or "not enough shared items yet",
        )
        t.add_row("workers", ", ".join(f"{w} {n}" for w, n in sorted(self.workers.items())))
        k = self.kappa(truth)
        t.add_row("kappa vs corpus labels", "undefined" if k is None else f"{k:.3f}")
        return t

    def kappa(self, truth: dict[str, int]) -> float | None:
        pairs = [
            (truth[i], int(d["probabilities"]["violating"] >= 0.5))
            for i, d in self.decisions.items()
            if i in truth
        ]
        if not pairs:
            return None
        a, b = zip(*pairs, strict=True)
        return kappa(list(a), list(b))


async def _watch(settings: Settings, state: DemoState, stop: asyncio.Event) -> None:
    topics = settings.kafka.topics
    kinds = {
        topics.decisions: "decision",
        topics.review_requests: "review",
        topics.items_dlq: "dead",
    }
    assert settings.kafka.bootstrap_servers
    consumer = await open_reader(settings.kafka.bootstrap_servers, list(kinds))
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.value is not None:
                        state.on_message(kinds[tp.topic], json.loads(record.value))
    finally:
        await consumer.stop()


def _model(settings: Settings, data: list[LabeledItem], seed: int, console: Console) -> set[str]:
    """Use the configured model, or bootstrap one; return the ids it was trained on."""
    try:
        manifest = ModelManifest.read(settings.model.dir)
        console.print(f"model {manifest.model_version} from {settings.model.dir}")
        return set()
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


def run_demo(
    settings: Settings,
    *,
    items: int,
    rate: float,
    workers: int,
    seed: int,
    out: Path,
    live: bool,
) -> int:
    from adapters.corpus import fetch_spamassassin
    from streams.services import EmbeddedServices

    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if settings.embedded:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bl-demo-")))
            endpoints = stack.enter_context(EmbeddedServices(state_dir=state_dir))
            settings = settings.with_services(endpoints.bootstrap_servers, endpoints.redis_url)
            console.print(
                f"embedded kafka {endpoints.bootstrap_servers}, redis {endpoints.redis_url}"
            )
        assert settings.kafka.bootstrap_servers
        corpus = fetch_spamassassin(settings.data_dir)
        data = read_jsonl(corpus.path)
        trained_on = _model(settings, data, seed, console)
        stream = sample(
            data, min(items, len(data) - len(trained_on)), seed=seed + 2, exclude=trained_on
        )
        truth = {i.item_id: i.label for i in stream}
        asyncio.run(
            ensure_topics(
                settings.kafka.bootstrap_servers,
                settings.kafka.topics.all(),
                settings.kafka.partitions,
            )
        )
        if settings.worker.scorer_threads == 0:  # one core's worth each: no oversubscription
            threads = max(1, (os.cpu_count() or 1) // workers)
            worker = settings.worker.model_copy(update={"scorer_threads": threads})
            settings = settings.model_copy(update={"worker": worker})
        procs: list[WorkerProcess] = []
        for k in range(workers):
            procs.append(
                start_worker(
                    settings,
                    f"worker-{k + 1}",
                    out / f"worker-{k + 1}.log",
                    metrics_port=(settings.metrics.port + k) if settings.metrics.port else None,
                    wait=False,
                )
            )
            stack.callback(procs[-1].stop)
        collector = start_worker(
            settings,
            "collector",
            out / "collector.log",
            metrics_port=(settings.metrics.port + workers) if settings.metrics.port else None,
            wait=False,
            role="collector",
        )
        stack.callback(collector.stop)
        panel = parse_panel(DEFAULT_PANEL)
        asyncio.run(_register(settings, [r.reviewer_id for r in panel]))
        for p in [*procs, collector]:
            p.wait_ready()
        console.print(
            f"{workers} workers and the label collector ready; SIMULATED expert panel "
            f"{', '.join(r.reviewer_id for r in panel)}; "
            f"replaying {len(stream)} items at {rate:g}/s"
        )
        state = DemoState()
        try:
            asyncio.run(_drive(settings, stream, rate, state, truth, live, console, panel))
        except KeyboardInterrupt:
            console.print("interrupted: stopping workers and services")
        summary: dict[str, Any] = {
            "items_in": state.items_in,
            "items_decided": len(state.decisions),
            "duplicate_decisions": state.duplicates,
            "actions": dict(state.actions()),
            "review_requests": dict(state.review_requests),
            "dead_letters": sum(state.dead_letters.values()),
            "labels_collected": state.labels,
            "reviewers_excluded": sorted(state.excluded),
            "expert_pairwise_kappa": state.ceiling,
            "decisions_per_s": round(state.rate(), 2),
            "kappa_vs_corpus_labels": state.kappa(truth),
            "workers": dict(state.workers),
            "seed": seed,
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print_json(json.dumps(summary))
    console.print(f"summary written to {out / 'summary.json'}")
    return 0 if len(state.decisions) >= state.items_in else 1


async def _register(settings: Settings, reviewer_ids: list[str]) -> None:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    try:
        await LabelStore(redis, settings.redis.key_prefix).register_reviewers(reviewer_ids)
    finally:
        await redis.aclose()


async def _follow_labels(settings: Settings, state: DemoState, stop: asyncio.Event) -> None:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    store = LabelStore(redis, settings.redis.key_prefix)
    policy = settings.policy.version
    try:
        while not stop.is_set():
            votes = await store.all_votes(policy)
            state.labels = sum(len(v) for v in votes.values())
            state.excluded = await store.excluded()
            trusted = {
                i: {r: v for r, v in iv.items() if r not in state.excluded}
                for i, iv in votes.items()
            }
            report = agreement_report(votes, min_shared=settings.review.min_shared)
            state.agreement = {r.reviewer: r.kappa for r in report.reviewers if r.kappa is not None}
            state.ceiling = agreement_report(
                trusted, min_shared=settings.review.min_shared
            ).mean_pairwise_kappa
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    finally:
        await redis.aclose()


async def _drive(
    settings: Settings,
    stream: list[LabeledItem],
    rate: float,
    state: DemoState,
    truth: dict[str, int],
    live: bool,
    console: Console,
    panel: list[SimulatedReviewer],
) -> None:
    assert settings.kafka.bootstrap_servers
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(settings, state, stop))
    labels_view = asyncio.create_task(_follow_labels(settings, state, stop))
    corpus_truth = {i: ("violating" if y else "benign") for i, y in truth.items()}
    experts = asyncio.create_task(
        run_simulated_panel(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics,
            panel,
            corpus_truth,
            per_item=3,
            seed=settings.review.seed,
            stop=stop,
        )
    )
    state.items_in = len(stream)
    state.started = time.time()
    producer = asyncio.create_task(
        replay_items(
            settings.kafka.bootstrap_servers, settings.kafka.topics.items, stream, rate=rate
        )
    )
    deadline = time.time() + len(stream) / rate + 120
    view = Live(state.table(truth), console=console, refresh_per_second=4) if live else None
    last_line = 0.0
    try:
        if view:
            view.start()
        pending = lambda: len(state.decisions) < len(stream) or not producer.done()  # noqa: E731
        while pending() and time.time() < deadline:
            await asyncio.sleep(0.25)
            if view:
                view.update(state.table(truth))
            elif time.time() - last_line >= 2:
                last_line = time.time()
                a = state.actions()
                console.print(
                    f"decided {len(state.decisions)}/{len(stream)} ({state.rate():.1f}/s) "
                    f"allow {a['allow']} block {a['block']} review {a['review']} "
                    f"dead {sum(state.dead_letters.values())}"
                )
        await producer
    finally:
        if view:
            view.update(state.table(truth))
            view.stop()
        await asyncio.sleep(3)  # the panel's last answers and the collector catch up
        stop.set()
        await asyncio.gather(watcher, labels_view, experts)
