"""Drift signals where the data is: each classify worker feeds its scored batches (embeddings and
P(violating)) to input and prediction drift detectors, the label collector feeds whether the
model's decision disagreed with the expert consensus to a concept drift detector. Each signal is
a Prometheus gauge; a detector that fires raises a flag in Redis (`adapters.adapt.verdicts`,
which owns the key) that the trainer reads as a trigger, and the detector starts over on a fresh
reference."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from adapters.adapt.detectors import ConceptDrift, PredictionDrift
from adapters.adapt.drift import DriftMonitor
from adapters.adapt.input_drift import InputDrift
from adapters.adapt.verdicts import VerdictKeys, VerdictStore
from models.scorer import ScoreBatch
from streams.service.metrics import Metrics
from streams.wire.settings import DriftSettings

__all__ = ["DriftWatch", "flags_key"]

log = logging.getLogger(__name__)


def flags_key(prefix: str) -> str:
    """The drift flags' Redis key (for readers that hold a bare Redis client)."""
    return VerdictKeys(prefix).drift_flags


class DriftWatch:
    def __init__(self, redis: Redis, prefix: str, metrics: Metrics, config: DriftSettings) -> None:
        self.redis = redis
        self.prefix = prefix
        self.flags = VerdictStore(redis, prefix)
        self.metrics = metrics
        self.monitor = DriftMonitor(
            input_drift=InputDrift(
                reference_size=config.reference_size,
                window_size=config.window_size,
                threshold=config.input_threshold,
                seed=config.seed,
            ),
            prediction_drift=PredictionDrift(
                reference_size=config.reference_size,
                window_size=config.window_size,
                threshold=config.prediction_threshold,
            ),
            concept_drift=ConceptDrift(threshold=config.concept_threshold),
        )

    async def _publish(self) -> None:
        for name, value in self.monitor.signals().items():
            if value is not None:
                self.metrics.drift_statistic.labels(signal=name).set(value)
        fired = self.monitor.triggered()
        for name in ("input", "prediction", "concept"):
            self.metrics.drift_detected.labels(signal=name).set(1.0 if name in fired else 0.0)
        if fired:
            log.warning("drift detected: %s (%s)", fired, self.monitor.signals())
            await self.flags.raise_flags(fired)
            self.monitor.reset()

    def adapter_changed(self, previous: str, current: str) -> None:
        """A new adapter serves: its scores and embeddings differ by design, so input and
        prediction drift measure against a fresh reference from here on."""
        self.monitor.input_drift.reset()
        self.monitor.prediction_drift.reset()
        log.info("drift reference restarted: adapter %s -> %s", previous, current)

    async def observe(self, batch: ScoreBatch) -> None:
        if len(batch) == 0:
            return
        self.monitor.update_batch(batch.embeddings, batch.violating())
        await self._publish()

    async def feedback(self, disagreements: list[bool]) -> None:
        if not disagreements:
            return
        self.monitor.update_feedback(disagreements)
        await self._publish()
