"""Drift: three streaming signals that tell the loop the world or the model has moved.

- `InputDrift`: the embedding distribution of a recent window against a reference window;
- `PredictionDrift`: the violating rate and the score distribution, same windows;
- `ConceptDrift`: how often the model disagrees with expert consensus on reviewed items.

Each is a small river-style object: `update(x)` returns the detector, `drift_detected`,
`statistic` and `threshold` are read-only, `reset()` starts over. No clock, no global random
state (the one random choice, `InputDrift`'s projections, takes a `seed`). The statistics come
from libraries: scipy's two-sample Kolmogorov-Smirnov and Fisher exact tests, river's ADWIN.
`false_alarm_rate` replays stationary streams to measure how often a detector fires for nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

import numpy as np
import numpy.typing as npt

from adapters.adapt.detectors import ConceptDrift, DriftError, PredictionDrift, as_rows, as_scores
from adapters.adapt.input_drift import InputDrift

__all__ = ["DriftMonitor"]


class DriftMonitor:
    """The three detectors together, as the scoring and review loops feed them.

    `update_batch` takes a batch of scored items (embeddings and P(violating)),
    `update_feedback` reviewed items' disagreement with consensus. `signals` gives each
    statistic (for the gauges), `triggered` the names of the detectors whose
    `drift_detected` is True now. Detectors not given are built with their defaults.

    >>> rng = np.random.default_rng(0)
    >>> monitor = DriftMonitor(input_drift=InputDrift(reference_size=100, window_size=100))
    >>> _ = monitor.update_batch(rng.normal(size=(200, 8)), rng.beta(1, 20, size=200))
    >>> sorted(monitor.signals()), monitor.triggered()
    (['concept', 'input', 'prediction'], [])
    >>> monitor.update_feedback([True] * 60).triggered()
    ['concept']
    """

    def __init__(
        self,
        *,
        input_drift: InputDrift | None = None,
        prediction_drift: PredictionDrift | None = None,
        concept_drift: ConceptDrift | None = None,
        seed: int = 0,
    ) -> None:
        self.input_drift = input_drift if input_drift is not None else InputDrift(seed=seed)
        self.prediction_drift = (
            prediction_drift if prediction_drift is not None else (PredictionDrift())
        )
        self.concept_drift = concept_drift if concept_drift is not None else ConceptDrift()

    def _detectors(self) -> dict[str, InputDrift | PredictionDrift | ConceptDrift]:
        return {
            "input": self.input_drift,
            "prediction": self.prediction_drift,
            "concept": self.concept_drift,
        }

    def update_batch(self, embeddings: npt.ArrayLike, p_violating: npt.ArrayLike) -> Self:
        """One batch of scored items: embeddings (rows x dims) and their P(violating). Both
        are checked before either detector moves, so a bad batch leaves them as they were."""
        rows = as_rows(embeddings, self.input_drift.dims)
        scores = as_scores(p_violating)
        if len(rows) != len(scores):
            raise DriftError(f"{len(rows)} embeddings but {len(scores)} scores in one batch")
        self.input_drift.update(rows)
        self.prediction_drift.update(scores)
        return self

    def update_feedback(self, disagree: bool | Iterable[bool]) -> Self:
        """Reviewed items: whether the model's decision differed from expert consensus."""
        for item in [disagree] if isinstance(disagree, bool | np.bool_) else disagree:
            self.concept_drift.update(bool(item))
        return self

    def signals(self) -> dict[str, float | None]:
        """Each detector's statistic: input and prediction are p-values (drift below their
        threshold), concept a disagreement rate (drift above it); None before a first value."""
        return {name: detector.statistic for name, detector in self._detectors().items()}

    def triggered(self) -> list[str]:
        """Names of the detectors whose `drift_detected` is True, in a fixed order."""
        return [name for name, detector in self._detectors().items() if detector.drift_detected]

    def reset(self) -> None:
        """Reset every detector (after an adaptation the new state is the new normal)."""
        for detector in self._detectors().values():
            detector.reset()
