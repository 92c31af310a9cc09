"""Unit tests for the outage settings (``BORDERLINE_RESILIENCE__*``): the defaults (an outage
budget of at least a minute), environment overrides, refused values, and the retired attempt
settings named with what replaced them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.wire.settings import (
    ResilienceSettings,
    Settings,
    SettingsError,
    check_environment,
    environment_names,
)

pytestmark = pytest.mark.usefixtures("no_borderline_env")


def test_defaults_ride_out_at_least_a_minute() -> None:
    r = Settings().resilience
    assert r == ResilienceSettings()
    assert r.outage_budget_s >= 60
    assert r.backoff_base_s <= r.backoff_max_s
    assert r.call_timeout_s < r.outage_budget_s
    assert r.log_interval_s == 10


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BORDERLINE_RESILIENCE__OUTAGE_BUDGET_S", "5")
    monkeypatch.setenv("BORDERLINE_RESILIENCE__LOG_INTERVAL_S", "2.5")
    r = Settings().resilience
    assert (r.outage_budget_s, r.log_interval_s) == (5.0, 2.5)
    assert r.backoff_max_s == ResilienceSettings().backoff_max_s
    assert "BORDERLINE_RESILIENCE__OUTAGE_BUDGET_S" in environment_names()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BORDERLINE_RESILIENCE__OUTAGE_BUDGET_S", "0"),
        ("BORDERLINE_RESILIENCE__OUTAGE_BUDGET_S", "a minute"),
        ("BORDERLINE_RESILIENCE__BACKOFF_BASE_S", "-1"),
        ("BORDERLINE_RESILIENCE__BACKOFF_BASE_S", "10"),  # above backoff_max_s
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("retired", "replacement"),
    [
        ("BORDERLINE_WORKER__RETRY_ATTEMPTS", "BORDERLINE_RESILIENCE__OUTAGE_BUDGET_S"),
        ("BORDERLINE_WORKER__RETRY_BACKOFF_S", "BORDERLINE_RESILIENCE__BACKOFF_BASE_S"),
    ],
)
def test_the_retired_attempt_settings_name_what_replaced_them(
    retired: str, replacement: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        check_environment({retired: "5"})
    assert str(caught.value).startswith(f"{retired} was replaced by {replacement}")
