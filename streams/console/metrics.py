"""The console's Prometheus metrics, on a registry of its own (served at ``/metrics``). Same rules
as `streams.service.metrics`: ``borderline_`` prefix, base units, low-cardinality labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from streams.service.metrics import consumer_lag_gauge

__all__ = ["ConsoleMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ConsoleMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.requests_expired = Counter(
            "borderline_review_requests_expired_total",
            "Review requests closed unanswered after the maximum age, by policy",
            ["policy"],
            registry=r,
        )
        self.labels_sent = Counter(
            "borderline_console_labels_total",
            "Labels given in the console and produced to the labels topic",
            registry=r,
        )
        self.actions = Counter(
            "borderline_console_actions_total",
            "Console state changes by action (label, skip, undo, release, login...)",
            ["action"],
            registry=r,
        )
        self.logins_refused = Counter(
            "borderline_console_logins_refused_total",
            "Sign-ins refused, by why (password, throttled)",
            ["why"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "borderline_console_request_seconds",
            "Console HTTP request duration, by route kind",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_open = Gauge(
            "borderline_console_queue_open",
            "Items open in the console's review queue (active policy)",
            registry=r,
        )
        # the same series as the other processes' (`streams.service.metrics`), for its group
        self.consumer_lag = consumer_lag_gauge(r)
        self.oldest_request_age = Gauge(
            "borderline_console_oldest_request_age_seconds",
            "Age of the oldest open review request (active policy)",
            registry=r,
        )
