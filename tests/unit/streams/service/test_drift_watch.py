"""A worker's drift detectors start a fresh reference when a new adapter serves: its scores and
embeddings move by design, and measuring them against the old adapter's reference would raise a
drift flag (and a training round) for every promotion."""

from __future__ import annotations

import numpy as np

from streams.service.drift_watch import DriftWatch
from streams.service.metrics import Metrics
from streams.wire.settings import DriftSettings


def test_an_adapter_swap_restarts_the_input_and_prediction_references() -> None:
    watch = DriftWatch(
        None,  # type: ignore[arg-type]  # Redis is only touched when a detector fires
        "t",
        Metrics(),
        DriftSettings(reference_size=50, window_size=50),
    )
    rng = np.random.default_rng(0)
    watch.monitor.update_batch(rng.normal(size=(60, 8)), rng.uniform(size=60))
    assert watch.monitor.input_drift.has_reference
    assert watch.monitor.prediction_drift.reference_rate is not None

    watch.adapter_changed("boot", "v2-candidate")

    assert not watch.monitor.input_drift.has_reference
    assert watch.monitor.prediction_drift.reference_rate is None
    # the next items build the new reference
    watch.monitor.update_batch(rng.normal(size=(50, 8)), rng.uniform(size=50))
    assert watch.monitor.input_drift.has_reference
