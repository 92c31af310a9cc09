"""`borderline bench stream`: what the stream costs against the bare scorer, and what it gains
over a naive peer, in one run on the same items (these machines are noisy: only ratios taken in
the same run mean anything).

1. bare scorer: the same texts scored in batches of the worker's batch size, no Kafka;
2. stream: a real worker process on the embedded (or configured) broker and Redis, items replayed
   as fast as the broker takes them, throughput from first produce to last decision;
3. latency: items replayed at ``--rate`` (default half the measured stream throughput), p50/p99
   of produce-to-decision;
4. naive peer: a plain aiokafka consumer that calls a Hugging Face ``transformers`` pipeline in
   PyTorch per message (same encoder, same truncation) and produces a decision.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from adapters.labels.dataset import LabeledItem, read_jsonl, sample
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.demo.replay import replay_items
from streams.embedded.launcher import start_worker
from streams.service.reader import read_topic
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics

__all__ = ["bench_items", "bench_stream", "isolated_run", "stream_run"]


def _bare_scorer(settings: Settings, texts: list[str]) -> float:
    scorer = Scorer.from_dir(settings.model.dir, threads=settings.worker.scorer_threads)
    size = settings.worker.batch_max_size
    scorer.score(texts[:size])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(texts), size):
        scorer.score(texts[i : i + size])
    return len(texts) / (time.perf_counter() - started)


def _decisions(settings: Settings, wanted: set[str], timeout_s: float) -> list[dict[str, Any]]:
    assert settings.kafka.bootstrap_servers
    return asyncio.run(
        read_topic(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics.decisions,
            until=lambda msgs: wanted <= {m["item_id"] for m in msgs},
            timeout_s=timeout_s,
        )
    )


def stream_run(
    settings: Settings, items: list[LabeledItem], rate: float | None, timeout_s: float
) -> tuple[float, np.ndarray]:
    """Replay ``items``; return (items/s from first produce to last decision, latencies)."""
    assert settings.kafka.bootstrap_servers
    started = time.time()
    asyncio.run(
        replay_items(
            settings.kafka.bootstrap_servers, settings.kafka.topics.items, items, rate=rate
        )
    )
    wanted = {i.item_id for i in items}
    decisions = _decisions(settings, wanted, timeout_s)
    latest = {d["item_id"]: d for d in decisions if d["item_id"] in wanted}
    if len(latest) < len(items):
        raise RuntimeError(f"only {len(latest)} of {len(items)} items were decided")
    last = max(d["decided_at"] for d in latest.values())
    latencies = np.array([d["latency_s"] for d in latest.values()], dtype=np.float64)
    return len(items) / (last - started), latencies


async def _naive_peer(
    bootstrap: str, topics: TopicNames, n: int, max_length: int
) -> float:  # pragma: no cover - exercised by the benchmark, needs torch
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from models.base import base_model

    base = base_model()
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base.path), num_labels=2, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(str(base.path), local_files_only=True)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    consumer = AIOKafkaConsumer(
        topics.items,
        bootstrap_servers=bootstrap,
        group_id=f"naive-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    done = 0
    started: float | None = None
    try:
        async for record in consumer:
            if started is None:
                started = time.perf_counter()
            assert record.value is not None
            doc = json.loads(record.value)
            result = classify(doc["text"], truncation=True, max_length=max_length)[0]
            decision = {
                "item_id": doc["item_id"],
                "label": result["label"],
                "score": result["score"],
            }
            await producer.send_and_wait(topics.decisions, json.dumps(decision).encode())
            done += 1
            if done >= n:
                break
    finally:
        await consumer.stop()
        await producer.stop()
    assert started is not None
    return done / (time.perf_counter() - started)


def isolated_run(stack: ExitStack, settings: Settings) -> tuple[Settings, Path, str]:
    """Services (embedded unless configured), and settings with this run's own topics (created),
    consumer group and Redis prefix; plus a folder for logs and the run's tag."""
    from streams.embedded.services import EmbeddedServices

    if settings.embedded:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        endpoints = stack.enter_context(EmbeddedServices(state_dir=state))
        settings = settings.with_services(endpoints.bootstrap_servers, endpoints.redis_url)
    tag = uuid.uuid4().hex[:8]
    kafka = settings.kafka.model_copy(
        update={"topics": TopicNames().prefixed(f"bench{tag}."), "app_id": f"bench-{tag}"}
    )
    run = settings.model_copy(
        update={
            "kafka": kafka,
            "redis": settings.redis.model_copy(update={"key_prefix": f"bench-{tag}"}),
        }
    )
    assert run.kafka.bootstrap_servers
    asyncio.run(
        ensure_topics(run.kafka.bootstrap_servers, run.kafka.topics.all(), run.kafka.partitions)
    )
    logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    return run, logs, tag


def bench_items(
    settings: Settings, n: int, seed: int, corpus: Path | None = None
) -> list[LabeledItem]:
    """``n`` corpus items that fit the worker's size limit (none is dead-lettered)."""
    from adapters.offline.corpus import fetch_spamassassin

    data = read_jsonl(corpus or fetch_spamassassin(settings.data_dir).path)
    limit = settings.worker.max_text_bytes
    chosen = [
        i for i in sample(data, min(n * 2, len(data)), seed=seed) if len(i.text.encode()) <= limit
    ]
    return chosen[:n]


def bench_stream(
    settings: Settings,
    *,
    items: int,
    rate: float | None,
    naive_items: int,
    seed: int,
    corpus: Path | None = None,
) -> dict[str, Any]:
    manifest = ModelManifest.read(settings.model.dir)  # fail early, with the fix in the message
    chosen = bench_items(settings, items, seed, corpus)
    texts = [i.text for i in chosen]
    figures: dict[str, Any] = {
        "items": len(chosen),
        "model_version": manifest.model_version,
        "batch_max_size": settings.worker.batch_max_size,
        "cpu_count": os.cpu_count(),
    }
    figures["scorer_items_per_s"] = round(_bare_scorer(settings, texts), 2)

    with ExitStack() as stack:
        run, logs, tag = isolated_run(stack, settings)
        assert run.kafka.bootstrap_servers
        worker = start_worker(run, f"bench-{tag}", logs / "worker.log")
        stack.callback(worker.stop)

        # throughput: everything at once
        warm = chosen[: settings.worker.batch_max_size]
        stream_run(run, warm, None, 120)
        throughput, _ = stream_run(run, chosen, None, 600)
        figures["stream_items_per_s"] = round(throughput, 2)
        figures["ratio"] = round(throughput / figures["scorer_items_per_s"], 3)

        # latency at a steady load (half of max throughput unless --rate)
        load = rate or throughput / 2
        n_latency = min(len(chosen), max(100, int(load * 20)))
        latency_items = [
            LabeledItem(f"lat-{k}-{i.item_id}", i.text, i.label) for k, i in enumerate(chosen)
        ][:n_latency]
        _, latencies = stream_run(run, latency_items, load, 600)
        figures["latency_rate_items_per_s"] = round(load, 2)
        figures["latency_items"] = len(latency_items)
        figures["p50_latency_s"] = round(float(np.percentile(latencies, 50)), 4)
        figures["p99_latency_s"] = round(float(np.percentile(latencies, 99)), 4)
        figures["worker_rss_mb"] = round(worker.peak_rss_mb() or float("nan"), 1)

        # the naive peer on its own topics
        naive_topics = TopicNames().prefixed(f"naive{tag}.")
        asyncio.run(
            ensure_topics(run.kafka.bootstrap_servers, naive_topics.all(), run.kafka.partitions)
        )
        naive_set = chosen[:naive_items]
        asyncio.run(replay_items(run.kafka.bootstrap_servers, naive_topics.items, naive_set))
        naive = asyncio.run(
            _naive_peer(
                run.kafka.bootstrap_servers, naive_topics, len(naive_set), settings.model.max_length
            )
        )
        figures["naive_items"] = len(naive_set)
        figures["naive_items_per_s"] = round(naive, 2)
        figures["speedup_vs_naive"] = round(throughput / naive, 2)
    figures["targets"] = {
        "ratio>=0.9": figures["ratio"] >= 0.9,
        "speedup_vs_naive>=5": figures["speedup_vs_naive"] >= 5,
        "p99<=0.25s": figures["p99_latency_s"] <= 0.25,
        "worker_rss_mb<=600": figures["worker_rss_mb"] <= 600,
    }
    return figures
