"""Every Prometheus metric borderline exposes, defined in one place. Prefix ``borderline_``, base
units, ``_total`` counters, ``_seconds`` durations, low-cardinality labels (never an item id).

Metrics live on a `Metrics` object built once per process on its own registry and passed in, so
tests can build as many as they like. The same port answers ``/healthz`` (liveness: 503 when the
process is stuck) and ``/readyz`` (readiness), decided by `streams.service.health` on the
process's `Progress`; the server runs on its own thread, so it answers what the event loop last
wrote, not whether the loop still runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)

from streams.service.health import Progress, liveness, readiness, report

__all__ = ["Health", "Metrics", "consumer_lag_gauge", "serve_metrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SCORING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU seconds, open fds
        PlatformCollector(registry=r)
        self._stream(r)
        self._review(r)
        self._adaptation(r)
        self._cache(r)

    def _cache(self, r: CollectorRegistry) -> None:
        """The decision cache of repeated creatives (`streams.service.shared_cache`)."""
        self.cache_hits = Counter(
            "borderline_decision_cache_hits_total",
            "Items decided from the decision cache, by tier (memory, redis, batch: a twin in the "
            "same batch)",
            ["tier"],
            registry=r,
        )
        self.cache_misses = Counter(
            "borderline_decision_cache_misses_total", "Items the model had to score", registry=r
        )
        self.cache_evictions = Counter(
            "borderline_decision_cache_evictions_total",
            "Entries the in-process cache dropped to stay within its bounds",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "borderline_decision_cache_bytes", "Bytes held by the in-process cache", registry=r
        )
        self.cache_redis_failures = Counter(
            "borderline_decision_cache_redis_failures_total",
            "Shared-cache reads or writes that failed or timed out (the items were scored)",
            ["operation"],
            registry=r,
        )
        self.review_twins = Counter(
            "borderline_review_twins_skipped_total",
            "Cached items not sent to review because an item with the same text already was",
            registry=r,
        )

    def _stream(self, r: CollectorRegistry) -> None:
        """The classify stream: decisions, dead letters, batches, latency, lag, retries, the
        model served."""
        self.items = Counter(
            "borderline_items_total", "Items decided, by action", ["action"], registry=r
        )
        self.dead_letters = Counter(
            "borderline_dead_letters_total",
            "Messages sent to a dead-letter topic, by reason",
            ["topic", "reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "borderline_batch_size", "Items per scored batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.scoring_seconds = Histogram(
            "borderline_scoring_seconds",
            "Seconds to score one batch",
            buckets=_SCORING_BUCKETS,
            registry=r,
        )
        self.tokenised_ahead = Gauge(
            "borderline_tokenised_ahead_texts",
            "Texts scored with ids tokenised while the batch before them was scored, since start",
            registry=r,
        )
        self.decision_latency = Histogram(
            "borderline_decision_latency_seconds",
            "Seconds from an item's produced_at to its decision",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = consumer_lag_gauge(r)
        self.retries = Counter(
            "borderline_infrastructure_retries_total",
            "Broker or Redis operations retried after a failure",
            ["target"],
            registry=r,
        )
        self.model_info = Info(
            "borderline_model", "Model, adapter and policy version being served", registry=r
        )

    def _review(self, r: CollectorRegistry) -> None:
        """Review requests, expert labels and the reviewers' agreement."""
        self.review_requests = Counter(
            "borderline_review_requests_total",
            "Review requests sent, by reason",
            ["reason"],
            registry=r,
        )
        self.second_opinions = Counter(
            "borderline_second_opinions_total",
            "Second opinions the collector asked, by why: split (no strict majority), untrusted "
            "(only excluded reviewers' votes), model (a single opinion against the model's "
            "decision), new_reviewer",
            ["why"],
            registry=r,
        )
        self.review_duplicates = Counter(
            "borderline_review_requests_deduplicated_total",
            "Review requests not sent again because the item was already requested",
            registry=r,
        )
        self.labels = Counter(
            "borderline_labels_total",
            "Expert labels received, by result (stored, duplicate, unregistered_reviewer, ...)",
            ["result"],
            registry=r,
        )
        self.reviewer_agreement = Gauge(
            "borderline_reviewer_agreement_kappa",
            "Each reviewer's Cohen's kappa against the consensus of the others",
            ["reviewer"],
            registry=r,
        )
        self.reviewers_excluded = Gauge(
            "borderline_reviewers_excluded",
            "Reviewers whose labels are excluded from training (agreement below threshold)",
            registry=r,
        )
        self.reviewer_panel = Gauge(
            "borderline_reviewer_panel_reviewers",
            "Reviewers who gave a label: the panel that judges its own members",
            registry=r,
        )
        self.reviewer_panel_short = Gauge(
            "borderline_reviewer_panel_short",
            "1 while the panel is too small to exclude anyone (review.min_panel), else 0",
            registry=r,
        )
        self.expert_pairwise_kappa = Gauge(
            "borderline_expert_pairwise_kappa",
            "Mean Cohen's kappa between pairs of experts: the ceiling for the model",
            registry=r,
        )
        self.review_open = Gauge(
            "borderline_review_open_requests",
            "Review requests sent and not yet answered",
            registry=r,
        )

    def _adaptation(self, r: CollectorRegistry) -> None:
        """Drift, adapter swaps, the trainer and the gate."""
        self.drift_statistic = Gauge(
            "borderline_drift_statistic",
            "Current drift statistic per signal (input, prediction: p-value; concept: rate)",
            ["signal"],
            registry=r,
        )
        self.drift_detected = Gauge(
            "borderline_drift_detected",
            "1 when a drift detector fired at its last check",
            ["signal"],
            registry=r,
        )
        self.adapter_swaps = Counter(
            "borderline_adapter_swaps_total",
            "Adapter changes applied by this worker (promote, rollback) or refused",
            ["result"],
            registry=r,
        )
        self.adapter_signature_refusals = Counter(
            "borderline_adapter_signature_refusals_total",
            "Adapters this worker refused to load because the trainer did not sign them, by "
            "reason (unsigned, wrong_key, bad_signature, not_gated, no_key)",
            ["reason"],
            registry=r,
        )
        self.adapter_mismatch = Gauge(
            "borderline_adapter_mismatch",
            "1 when this worker serves another adapter than the registry names active for its "
            "policy (it refused that one, or has not swapped yet)",
            registry=r,
        )
        self.adapter_forced = Gauge(
            "borderline_adapter_forced",
            "1 when the registry's active adapter was promoted by hand past the gate (--force)",
            registry=r,
        )
        self.adapter_swap_seconds = Histogram(
            "borderline_adapter_swap_seconds",
            "Seconds from learning of a new active adapter to serving it",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.candidates = Counter(
            "borderline_candidates_total",
            "Candidate adapters the trainer judged, by verdict (promoted, refused)",
            ["verdict"],
            registry=r,
        )
        self.rollbacks = Counter(
            "borderline_adapter_rollbacks_total",
            "Promoted adapters rolled back automatically after failing on fresh expert labels",
            registry=r,
        )
        self.rollbacks_refused = Counter(
            "borderline_adapter_rollbacks_refused_total",
            "Trainer steps that found the live adapter below min_kappa, nothing to roll back to",
            registry=r,
        )
        self.gate_kappa = Gauge(
            "borderline_gate_kappa",
            "The gate's last verdict: Cohen's kappa of the candidate and the incumbent, the "
            "kappa required, and the experts' own pairwise kappa (the ceiling)",
            ["role"],
            registry=r,
        )
        self.live_kappa = Gauge(
            "borderline_live_kappa",
            "The promoted adapter's Cohen's kappa on expert labels given since its promotion",
            registry=r,
        )
        self.training_seconds = Histogram(
            "borderline_training_seconds",
            "Seconds to train one candidate adapter",
            buckets=(5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.training_labels = Gauge(
            "borderline_training_labels",
            "Consensus labels of the current policy, by split (train, eval)",
            ["split"],
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1", health: Health | None = None) -> int:
        """Serve /metrics (and /healthz, /readyz when ``health`` is given) on a background
        thread; return the bound port (port 0 picks one)."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if health is not None and path in ("/healthz", "/readyz"):
                status, body = health.answer(path)
                start_response(status, [("Content-Type", "application/json")])
                return [body]
            return metrics_app(environ, start_response)

        server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return int(server.server_port)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


@dataclass
class Health:
    """A process's `Progress` and its stuck window, answered over HTTP (200 or 503, JSON)."""

    progress: Progress
    stuck_after_s: float
    clock: Callable[[], float] = field(default=time.time)

    def answer(self, path: str) -> tuple[str, bytes]:
        now = self.clock()
        if path == "/readyz":
            ok = readiness(self.progress).ok
        else:
            ok = liveness(self.progress, now=now, stuck_after_s=self.stuck_after_s).ok
        body = report(self.progress, now=now, stuck_after_s=self.stuck_after_s)
        status = "200 OK" if ok else "503 Service Unavailable"
        return status, json.dumps(body).encode()


def consumer_lag_gauge(registry: CollectorRegistry) -> Gauge:
    """``borderline_consumer_lag_messages`` on ``registry``: every process that consumes (the
    workers, the collector, the console) reports its own group's lag under this one name."""
    return Gauge(
        "borderline_consumer_lag_messages",
        "Messages between a consumer group's committed offset and the end of the log, per "
        "partition, read from the broker (every process reports its own group)",
        ["group", "topic", "partition"],
        registry=registry,
    )


def serve_metrics(port: int, host: str, what: str, health: Health | None = None) -> Metrics:
    """A process's `Metrics`, served on ``host:port`` unless the port is 0 (off), with its
    ``/healthz`` and ``/readyz`` when ``health`` is given."""
    import logging

    metrics = Metrics()
    if port:
        bound = metrics.serve(port, host, health)
        logging.getLogger(__name__).info(
            "%s metrics on http://%s:%d/metrics (/healthz, /readyz)", what, host, bound
        )
    return metrics
