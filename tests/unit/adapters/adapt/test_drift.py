"""Unit tests for adapters.drift: the three streaming detectors, the monitor, and the replay
that measures false alarms.

Budgets asserted here, each on a stationary synthetic stream with the detector's DEFAULT
threshold (fixed seeds, so the figures are reproducible):
- InputDrift: <= 5% of 10 runs of 2,500 rows (384 dims; 11 checks a run) raise an alarm
  (kept small: each check is 64 KS tests); a mean shift of 0.25 sd on every coordinate is
  detected within 500 rows.
- PredictionDrift: <= 5% of 60 runs of 5,000 scores at 1% violating; 1% -> 10% violating is
  detected within 400 scores, a drop 10% -> 0.5% within 500.
- ConceptDrift: <= 5% of 200 runs of 2,000 reviewed items at 5% disagreement; 5% -> 40% is
  detected within 100 items.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Self

import numpy as np
import pytest
from scipy import stats

from adapters.adapt.detectors import (
    ConceptDrift,
    DriftError,
    PredictionDrift,
    false_alarm_rate,
    first_alarm,
)
from adapters.adapt.drift import DriftMonitor
from adapters.adapt.input_drift import InputDrift
from models.errors import BorderlineError

DIMS = 384
_WORLD = np.random.default_rng(12345)
_LOADINGS = _WORLD.normal(size=(16, DIMS)) / 4.0  # correlated coordinates, like an encoder's
_SD = np.sqrt((_LOADINGS**2).sum(axis=0) + 0.25)  # each coordinate's standard deviation


def _embeddings(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """n rows of a fixed 384-dim distribution (16 latent factors plus noise); `shift` moves the
    mean of every coordinate by that many of its standard deviations."""
    rows = rng.normal(size=(n, 16)) @ _LOADINGS + rng.normal(size=(n, DIMS)) * 0.5
    return rows + shift * _SD


def _batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def _scores(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """P(violating) of n items, a share `rate` of them violating (confident both ways)."""
    violating = rng.random(n) < rate
    return np.where(violating, rng.beta(8, 2, size=n), rng.beta(1, 20, size=n))


def _disagreements(rng: np.random.Generator, n: int, rate: float) -> list[bool]:
    return (rng.random(n) < rate).tolist()


def _alarm_delay(index: int | None, *, batch: int, change_at: int) -> int | None:
    """Items fed after the change up to and including the alarming update (None: no alarm)."""
    return None if index is None else (index + 1) * batch - change_at


# --- InputDrift --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reference_size": 0},
        {"window_size": -3},
        {"reference_size": True},
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"projections": 0},
        {"check_every": 0},
    ],
)
def test_input_rejects_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(DriftError, match=next(iter(kwargs))):
        InputDrift(**kwargs)  # type: ignore[arg-type]


def test_drift_error_is_a_borderline_error() -> None:
    assert issubclass(DriftError, BorderlineError)


def test_input_rejects_bad_embeddings() -> None:
    detector = InputDrift(reference_size=5, window_size=5)
    detector.update(np.zeros(8))
    with pytest.raises(DriftError, match="7 dims, the reference 8"):
        detector.update(np.zeros((2, 7)))
    with pytest.raises(DriftError, match="NaN"):
        detector.update(np.full(8, np.nan))
    with pytest.raises(DriftError, match="shape"):
        detector.update(np.zeros((2, 2, 8)))
    with pytest.raises(DriftError, match="one row or more"):
        detector.set_reference(np.zeros((0, 8)))


def test_input_is_silent_until_reference_and_window_are_full() -> None:
    rng = np.random.default_rng(0)
    detector = InputDrift(reference_size=10, window_size=5, check_every=5)
    assert detector.statistic is None and not detector.drift_detected
    detector.update(rng.normal(size=(12, 4)))  # reference complete, 2 rows in the window
    assert detector.has_reference and detector.checks == 0 and detector.statistic is None
    detector.update(rng.normal(size=(2, 4)))
    assert detector.checks == 0
    detector.update(rng.normal(size=4))  # the window is full: first check
    assert detector.checks == 1 and detector.statistic is not None


def test_input_checks_every_check_every_rows() -> None:
    rng = np.random.default_rng(0)
    detector = InputDrift(reference_size=20, window_size=10, check_every=4)
    detector.update(rng.normal(size=(30, 4)))
    assert detector.checks == 1
    for _ in range(3):
        detector.update(rng.normal(size=4))
    assert detector.checks == 1
    detector.update(rng.normal(size=4))
    assert detector.checks == 2
    detector.update(rng.normal(size=(9, 4)))  # one check per update, however big the batch
    assert detector.checks == 3


def test_input_statistic_is_bonferroni_over_scipy_ks_on_coordinates() -> None:
    rng = np.random.default_rng(1)
    reference, window = rng.normal(size=(60, 6)), rng.normal(0.3, 1.0, size=(40, 6))
    for projections in (None, 6, 100):  # as many projections as dims, or more: coordinates
        detector = InputDrift(
            reference_size=60, window_size=40, projections=projections, check_every=40
        )
        detector.update(np.vstack([reference, window]))
        pvalues = [
            stats.ks_2samp(reference[:, j], window[:, j], method="asymp").pvalue for j in range(6)
        ]
        assert detector.statistic == pytest.approx(min(1.0, 6 * min(pvalues)), rel=1e-6)


def test_input_row_by_row_equals_one_batch() -> None:
    rows = np.random.default_rng(2).normal(size=(70, 32))
    batch = InputDrift(reference_size=50, window_size=20, check_every=20, projections=8)
    single = InputDrift(reference_size=50, window_size=20, check_every=20, projections=8)
    batch.update(rows)
    for row in rows:
        single.update(row)
    assert batch.checks == single.checks == 1
    assert batch.statistic == single.statistic


def test_input_projections_follow_the_seed() -> None:
    rows = np.random.default_rng(3).normal(size=(300, 64)) + np.linspace(0, 0.3, 300)[:, None]

    def statistic(seed: int) -> float | None:
        kwargs = {"reference_size": 200, "window_size": 100, "projections": 8, "seed": seed}
        return InputDrift(**kwargs).update(rows).statistic

    assert statistic(0) == statistic(0)
    assert statistic(0) != statistic(1)


def test_input_set_reference_then_reset() -> None:
    rng = np.random.default_rng(4)
    detector = InputDrift(reference_size=1000, window_size=100, check_every=100)
    detector.set_reference(rng.normal(size=(300, 16)))
    assert detector.has_reference and detector.checks == 0
    detector.update(rng.normal(1.0, 1.0, size=(100, 16)))  # goes to the window, not the reference
    assert detector.drift_detected and detector.checks == 1

    detector.reset(keep_reference=True)
    assert detector.has_reference and not detector.drift_detected and detector.statistic is None
    detector.update(rng.normal(size=(100, 16)))
    assert detector.checks == 1 and not detector.drift_detected

    detector.reset()
    assert not detector.has_reference and detector.checks == 0
    detector.update(rng.normal(size=(100, 8)))  # a new reference may have other dims
    assert detector.checks == 0


def test_input_false_alarm_rate_is_within_budget() -> None:
    def stationary(rng: np.random.Generator) -> list[np.ndarray]:
        return _batches(_embeddings(rng, 2500), 100)

    rate = false_alarm_rate(InputDrift, stationary, runs=10, seed=7)
    assert rate <= 0.05


def test_false_alarm_rate_tells_a_loose_threshold() -> None:
    def stationary(rng: np.random.Generator) -> list[np.ndarray]:
        return _batches(_embeddings(rng, 2500), 100)

    # the same replay as the budget test, a threshold 500 times looser: most runs alarm
    rate = false_alarm_rate(lambda: InputDrift(threshold=0.5), stationary, runs=8, seed=7)
    assert rate >= 0.5


@pytest.mark.parametrize("seed", range(3))
def test_input_detects_a_mean_shift_within_500_rows(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    rows = np.vstack([_embeddings(rng, 1600), _embeddings(rng, 600, shift=0.25)])
    index = first_alarm(InputDrift(seed=seed), _batches(rows, 50))
    delay = _alarm_delay(index, batch=50, change_at=1600)
    assert delay is not None and 0 < delay <= 500


# --- PredictionDrift ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"reference_size": 0}, "reference_size"),
        ({"threshold": 2.0}, "threshold"),
        ({"decision_threshold": 0.0}, "decision_threshold"),
        ({"check_every": -1}, "check_every"),
    ],
)
def test_prediction_rejects_bad_configuration(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(DriftError, match=name):
        PredictionDrift(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), [[0.1, 0.2]]])
def test_prediction_rejects_bad_scores(bad: object) -> None:
    with pytest.raises(DriftError):
        PredictionDrift().update(bad)  # type: ignore[arg-type]


def test_prediction_rates_and_statistic_come_from_scipy() -> None:
    rng = np.random.default_rng(5)
    reference, window = _scores(rng, 400, 0.05), _scores(rng, 200, 0.15)
    detector = PredictionDrift(reference_size=400, window_size=200, check_every=200)
    assert detector.rate is None and detector.reference_rate is None
    for score in reference[:5]:  # single floats are accepted
        detector.update(float(score))
    detector.update(reference[5:]).update(window)

    assert detector.reference_rate == pytest.approx(np.mean(reference >= 0.5))
    assert detector.rate == pytest.approx(np.mean(window >= 0.5))
    ks = stats.ks_2samp(reference, window, method="asymp").pvalue
    hits, ref_hits = int((window >= 0.5).sum()), int((reference >= 0.5).sum())
    fisher = stats.fisher_exact([[hits, 200 - hits], [ref_hits, 400 - ref_hits]]).pvalue
    assert detector.ks_pvalue == pytest.approx(ks)
    assert detector.rate_pvalue == pytest.approx(fisher)
    statistic = detector.statistic
    assert statistic is not None and statistic == pytest.approx(min(1.0, 2 * min(ks, fisher)))
    assert detector.drift_detected == (statistic < detector.threshold)

    detector.reset()
    assert detector.statistic is None and detector.rate is None and not detector.drift_detected


def test_prediction_false_alarm_rate_is_within_budget() -> None:
    def stationary(rng: np.random.Generator) -> list[np.ndarray]:
        return _batches(_scores(rng, 5000, 0.01), 50)

    assert false_alarm_rate(PredictionDrift, stationary, runs=60, seed=11) <= 0.05


@pytest.mark.parametrize("seed", range(5))
def test_prediction_detects_a_rise_in_violating_rate_within_400(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    scores = np.concatenate([_scores(rng, 2000, 0.01), _scores(rng, 1000, 0.10)])
    index = first_alarm(PredictionDrift(), _batches(scores, 50))
    delay = _alarm_delay(index, batch=50, change_at=2000)
    assert delay is not None and 0 < delay <= 400


def test_prediction_detects_a_drop_in_violating_rate() -> None:
    rng = np.random.default_rng(6)
    scores = np.concatenate([_scores(rng, 2000, 0.10), _scores(rng, 1000, 0.005)])
    detector = PredictionDrift()
    delay = _alarm_delay(first_alarm(detector, _batches(scores, 50)), batch=50, change_at=2000)
    assert delay is not None and 0 < delay <= 500
    assert detector.rate is not None and detector.reference_rate is not None
    assert detector.rate < detector.reference_rate


def test_prediction_sees_a_change_of_shape_at_a_steady_rate() -> None:
    rng = np.random.default_rng(8)
    detector = PredictionDrift(reference_size=1000, window_size=500, check_every=500)
    detector.update(rng.beta(1, 20, size=1000)).update(rng.beta(2, 20, size=500))  # none >= 0.5
    assert detector.rate == detector.reference_rate == 0.0
    assert detector.rate_pvalue == 1.0
    assert detector.ks_pvalue is not None and detector.ks_pvalue < 1e-6
    assert detector.drift_detected


# --- ConceptDrift ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"delta": 0.0}, "delta"),
        ({"min_items": 0}, "min_items"),
    ],
)
def test_concept_rejects_bad_configuration(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(DriftError, match=name):
        ConceptDrift(**kwargs)  # type: ignore[arg-type]


def test_concept_statistic_is_the_disagreement_rate() -> None:
    detector = ConceptDrift()
    assert detector.statistic is None
    for disagree in [True, False, False, False]:
        detector.update(disagree)
    assert detector.statistic == pytest.approx(0.25)
    assert detector.width == 4
    assert not detector.drift_detected  # 0.25 is not above 0.25, on 4 items of the 50 needed


def test_concept_false_alarm_rate_is_within_budget() -> None:
    def stationary(rng: np.random.Generator) -> list[bool]:
        return _disagreements(rng, 2000, 0.05)

    assert false_alarm_rate(ConceptDrift, stationary, runs=200, seed=13) <= 0.05


@pytest.mark.parametrize("seed", range(10))
def test_concept_detects_a_rise_within_100_items(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    stream = _disagreements(rng, 1000, 0.05) + _disagreements(rng, 1000, 0.40)
    delay = _alarm_delay(first_alarm(ConceptDrift(), stream), batch=1, change_at=1000)
    assert delay is not None and 0 < delay <= 100


def test_concept_rise_is_found_by_adwin_not_only_the_level() -> None:
    rng = np.random.default_rng(9)
    stream = _disagreements(rng, 1000, 0.05) + _disagreements(rng, 300, 0.40)
    detector = ConceptDrift(threshold=0.99)  # the level rule cannot fire
    assert first_alarm(detector, stream) is not None
    assert detector.upward_changes >= 1


def test_concept_fewer_disagreements_are_no_alarm() -> None:
    rng = np.random.default_rng(10)
    stream = _disagreements(rng, 1000, 0.30) + _disagreements(rng, 1000, 0.02)
    detector = ConceptDrift(threshold=0.9)
    assert first_alarm(detector, stream) is None
    assert detector.width < 1000  # ADWIN did see the change, and dropped the old items
    assert detector.upward_changes == 0
    assert detector.statistic is not None and detector.statistic < 0.1


def test_concept_level_rule_fires_on_a_model_poor_from_the_start() -> None:
    detector = ConceptDrift(threshold=0.25, min_items=50)
    index = first_alarm(detector, [True, False] * 100)  # 50% from the first item: no change
    assert index == 49  # the 50th item, not before
    assert detector.upward_changes == 0

    detector.reset()
    assert detector.statistic is None and not detector.drift_detected and detector.width == 0


# --- DriftMonitor ------------------------------------------------------------------------------


def _small_monitor() -> DriftMonitor:
    return DriftMonitor(
        input_drift=InputDrift(reference_size=100, window_size=50, check_every=50, seed=1),
        prediction_drift=PredictionDrift(reference_size=100, window_size=50, check_every=50),
        concept_drift=ConceptDrift(threshold=0.25, min_items=20),
    )


def test_monitor_reports_signals_and_triggers() -> None:
    rng = np.random.default_rng(12)
    monitor = _small_monitor()
    assert monitor.signals() == {"input": None, "prediction": None, "concept": None}
    monitor.update_batch(rng.normal(size=(150, 8)), _scores(rng, 150, 0.05))
    monitor.update_feedback(False)
    signals = monitor.signals()
    assert signals["input"] is not None and signals["input"] == monitor.input_drift.statistic
    assert signals["prediction"] is not None
    assert signals["prediction"] == monitor.prediction_drift.statistic
    assert signals["concept"] == 0.0
    assert monitor.triggered() == []

    monitor.update_batch(rng.normal(2.0, 1.0, size=(50, 8)), _scores(rng, 50, 0.9))
    monitor.update_feedback([True] * 30)
    assert monitor.triggered() == ["input", "prediction", "concept"]

    monitor.reset()
    assert monitor.triggered() == []
    assert monitor.signals() == {"input": None, "prediction": None, "concept": None}


def test_monitor_rejects_a_batch_of_mismatched_lengths() -> None:
    with pytest.raises(DriftError, match="3 embeddings but 2 scores"):
        _small_monitor().update_batch(np.zeros((3, 8)), [0.1, 0.2])


def test_monitor_bad_batch_moves_neither_detector() -> None:
    rng = np.random.default_rng(13)
    monitor = _small_monitor()
    monitor.update_batch(rng.normal(size=(140, 8)), _scores(rng, 140, 0.05))
    bad_scores = np.append(_scores(rng, 9, 0.05), np.nan)
    with pytest.raises(DriftError, match="scores"):
        monitor.update_batch(rng.normal(size=(10, 8)), bad_scores)
    bad_rows = rng.normal(size=(10, 8))
    bad_rows[3, 2] = np.inf
    with pytest.raises(DriftError, match="NaN or infinite"):
        monitor.update_batch(bad_rows, _scores(rng, 10, 0.05))
    with pytest.raises(DriftError, match="7 dims, the reference 8"):
        monitor.update_batch(rng.normal(size=(10, 7)), _scores(rng, 10, 0.05))
    assert monitor.input_drift.checks == 0  # a good 10-row batch would have been the first check
    monitor.update_batch(rng.normal(size=(10, 8)), _scores(rng, 10, 0.05))
    assert monitor.input_drift.checks == 1
    assert monitor.signals()["prediction"] is not None


def test_monitor_builds_defaults_from_the_seed() -> None:
    monitor = DriftMonitor(seed=3)
    assert monitor.input_drift.threshold == InputDrift().threshold
    assert monitor.concept_drift.threshold == ConceptDrift().threshold
    rows = np.random.default_rng(0).normal(size=(1500, 128))  # more dims than projections
    same = DriftMonitor(seed=3).update_batch(rows, np.zeros(1500)).signals()
    other = DriftMonitor(seed=4).update_batch(rows, np.zeros(1500)).signals()
    assert monitor.update_batch(rows, np.zeros(1500)).signals() == same
    assert same["input"] != other["input"]


# --- first_alarm and false_alarm_rate ----------------------------------------------------------


class _Above:
    """A fake detector: alarms on any value above `level`."""

    def __init__(self, level: float = 0.9) -> None:
        self.level = level
        self._last: float | None = None

    def update(self, x: float, /) -> Self:
        self._last = x
        return self

    @property
    def drift_detected(self) -> bool:
        return self._last is not None and self._last > self.level

    @property
    def statistic(self) -> float | None:
        return self._last

    @property
    def threshold(self) -> float:
        return self.level

    def reset(self) -> None:
        self._last = None


def test_first_alarm() -> None:
    assert first_alarm(_Above(), [0.1, 0.95, 0.2]) == 1
    assert first_alarm(_Above(), [0.1, 0.2]) is None
    assert first_alarm(_Above(), []) is None


def test_first_alarm_stops_reading_the_stream() -> None:
    def stream() -> Iterator[float]:
        yield 0.95
        raise AssertionError("read past the alarm")

    assert first_alarm(_Above(), stream()) == 0


def test_false_alarm_rate_is_the_share_of_runs_with_an_alarm() -> None:
    # each run: 5 uniform values, alarm above 0.9 -> P(any alarm) = 1 - 0.9**5 = 0.41
    def stream(rng: np.random.Generator) -> list[float]:
        return rng.random(5).tolist()

    rate = false_alarm_rate(_Above, stream, runs=2000, seed=0)
    assert rate == pytest.approx(1 - 0.9**5, abs=0.035)
    assert false_alarm_rate(_Above, stream, runs=200, seed=1) == false_alarm_rate(
        _Above, stream, runs=200, seed=1
    )
    assert false_alarm_rate(lambda: _Above(2.0), stream, runs=50, seed=0) == 0.0
    with pytest.raises(DriftError, match="runs"):
        false_alarm_rate(_Above, stream, runs=0, seed=0)
