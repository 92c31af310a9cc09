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
with promotional mail (``promo_share``) so that the policy change matters in a short run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from adapters.labels.dataset import read_jsonl
from adapters.offline.simulation import parse_panel
from adapters.policy.schema import load_policy
from streams.demo.follow import drive
from streams.demo.report import final_figures, write_report
from streams.demo.reviewers import start_console
from streams.demo.setup import compose_stream, demo_settings, ensure_model, prepare
from streams.demo.state import DemoOptions, DemoState
from streams.embedded.launcher import WorkerProcess, free_port, start_worker
from streams.wire.security import KafkaSecurity
from streams.wire.settings import Settings
from streams.wire.topics import ensure_topics

__all__ = ["run_demo"]


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
    gate = options.gate(settings.gate)
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
            str(gate.min_kappa),
            "--margin",
            str(gate.margin),
            "--min-eval-items",
            str(gate.min_eval_items),
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
    from adapters.offline.corpus import fetch_spamassassin
    from streams.embedded.keys import with_embedded_keys
    from streams.embedded.services import EmbeddedServices

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
            # the trainer signs, the workers verify: a key pair of the demo's own unless set
            settings = with_embedded_keys(demo_settings(settings))
            assert settings.kafka.bootstrap_servers
            corpus = fetch_spamassassin(settings.data_dir)
            data = read_jsonl(corpus.path)
            trained_on = ensure_model(settings, data, options.seed, console)
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
                    security=KafkaSecurity.of(settings.kafka),
                )
            )
            if settings.worker.scorer_threads == 0:  # one core's worth each
                threads = max(1, (os.cpu_count() or 1) // options.workers)
                worker = settings.worker.model_copy(update={"scorer_threads": threads})
                settings = settings.model_copy(update={"worker": worker})
            panel = parse_panel(options.panel)
            v1 = load_policy(options.v1)
            v2 = load_policy(options.v2) if options.policy_change else None
            state.adapter = asyncio.run(prepare(settings, v1, [r.reviewer_id for r in panel]))
            state.first_adapter = state.adapter
            state.policy = v1.version
            procs = _start_processes(settings, options, stack, console)
            if options.console:
                start_console(settings, out, stack, console)
            console.print(
                f"{options.workers} workers, the label collector and the trainer ready; "
                f"SIMULATED expert panel {', '.join(r.reviewer_id for r in panel)}; replaying "
                f"{len(stream)} items at {options.rate:g}/s"
                + (f", policy {v2.version} after {options.change_at:.0%}" if v2 else "")
            )
            state.items_total = len(stream)
            state.started = time.time()
            state.policy_events.append((0.0, v1.version))
            asyncio.run(drive(settings, options, stream, v2, state, truth, procs, console))
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
