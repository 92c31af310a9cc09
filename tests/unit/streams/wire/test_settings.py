"""Unit tests for streams.settings: embedded defaults, environment overrides (``BORDERLINE_`` and
``__`` between sections), the both-or-neither rule for external services, secrets kept out of
reprs, and the review band check."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streams.wire.settings import GateSettings, PolicySettings, Settings
from streams.wire.topics import TopicNames

REDIS_URL = "redis://:hunter2-secret@redis.example:6379/0"


pytestmark = pytest.mark.usefixtures("no_borderline_env")


def test_defaults_are_embedded() -> None:
    s = Settings()
    assert s.embedded is True
    assert s.kafka.bootstrap_servers is None
    assert s.redis.url is None
    assert s.kafka.topics == TopicNames()
    assert s.worker.batch_max_size == 16
    assert s.policy.review_low <= s.policy.block_threshold <= s.policy.review_high
    assert s.services.state_dir == Path(".borderline/services")


def test_nested_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BORDERLINE_WORKER__BATCH_MAX_SIZE", "64")
    monkeypatch.setenv("BORDERLINE_KAFKA__TOPICS__ITEMS", "x")
    monkeypatch.setenv("BORDERLINE_POLICY__VERSION", "v7")
    monkeypatch.setenv("BORDERLINE_DATA_DIR", "/tmp/corpora")
    s = Settings()
    assert s.worker.batch_max_size == 64
    assert s.worker.batch_max_wait_s == 0.05  # the rest of the section keeps its defaults
    assert s.kafka.topics.items == "x"
    assert s.kafka.topics.items_dlq == "x.dlq"
    assert s.kafka.topics.decisions == TopicNames().decisions
    assert s.policy.version == "v7"
    assert s.data_dir == Path("/tmp/corpora")
    assert s.embedded is True


def test_env_without_prefix_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER__BATCH_MAX_SIZE", "64")
    assert Settings().worker.batch_max_size == 16


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BORDERLINE_WORKER__BATCH_MAX_SIZE", "abc"),
        ("BORDERLINE_WORKER__BATCH_MAX_SIZE", "0"),
        ("BORDERLINE_WORKER__BATCH_MAX_SIZE", "5000"),
        ("BORDERLINE_KAFKA__PARTITIONS", "0"),
        ("BORDERLINE_POLICY__BLOCK_THRESHOLD", "1.5"),
    ],
)
def test_invalid_env_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("name", "value", "missing"),
    [
        ("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", "broker:9092", "BORDERLINE_REDIS__URL"),
        ("BORDERLINE_REDIS__URL", REDIS_URL, "BORDERLINE_KAFKA__BOOTSTRAP_SERVERS"),
    ],
)
def test_only_one_external_service_is_an_error_naming_the_other(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, missing: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert f"{missing} is missing" in str(info.value)


def test_both_external_services_turn_embedded_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("BORDERLINE_REDIS__URL", REDIS_URL)
    s = Settings()
    assert s.embedded is False
    assert s.kafka.bootstrap_servers == "broker:9092"
    assert isinstance(s.redis.url, SecretStr)
    assert s.redis.url.get_secret_value() == REDIS_URL
    for shown in (repr(s), str(s), repr(s.redis), s.model_dump_json()):
        assert "hunter2-secret" not in shown


def test_review_low_above_review_high_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BORDERLINE_POLICY__REVIEW_LOW", "0.8")
    monkeypatch.setenv("BORDERLINE_POLICY__REVIEW_HIGH", "0.2")
    with pytest.raises(ValidationError, match="review_low"):
        Settings()
    with pytest.raises(ValidationError, match="review_low"):
        PolicySettings(review_low=0.8, review_high=0.2)
    assert PolicySettings(review_low=0.4, review_high=0.4).review_low == 0.4


def test_with_services_returns_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BORDERLINE_WORKER__BATCH_MAX_SIZE", "64")
    s = Settings()
    connected = s.with_services("127.0.0.1:9092", "redis://127.0.0.1:6390/0")
    assert connected is not s
    assert connected.embedded is False
    assert connected.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert isinstance(connected.redis.url, SecretStr)
    assert connected.redis.url.get_secret_value() == "redis://127.0.0.1:6390/0"
    assert connected.worker.batch_max_size == 64  # everything else is kept
    assert connected.kafka.topics == s.kafka.topics
    # the original is untouched
    assert s.embedded is True
    assert s.kafka.bootstrap_servers is None
    assert s.redis.url is None


# --- the gate's knobs ---------------------------------------------------------------------------


def test_gate_defaults_are_one_set_the_gate_config_agrees_with() -> None:
    from adapters.adapt.gate import GateConfig

    gate = Settings().gate
    assert gate == GateSettings(
        min_kappa=0.7,
        margin=0.02,
        min_eval_items=50,
        min_new_labels=100,
        interval_s=15.0,
        rollback_cooldown_s=60.0,
    )
    # GateConfig keeps defaults for tests and examples: they must be the settings' own
    config = GateConfig()
    assert (config.min_kappa, config.margin, config.min_eval_items) == (
        gate.min_kappa,
        gate.margin,
        gate.min_eval_items,
    )


def test_gate_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MIN_KAPPA": "0.55",
        "MARGIN": "-0.01",
        "MIN_EVAL_ITEMS": "30",
        "MIN_NEW_LABELS": "25",
        "INTERVAL_S": "2.5",
        "ROLLBACK_COOLDOWN_S": "0",
    }.items():
        monkeypatch.setenv(f"BORDERLINE_GATE__{name}", value)
    gate = Settings().gate
    assert (gate.min_kappa, gate.margin, gate.min_eval_items) == (0.55, -0.01, 30)
    assert (gate.min_new_labels, gate.interval_s, gate.rollback_cooldown_s) == (25, 2.5, 0.0)


def test_one_gate_env_override_keeps_the_other_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BORDERLINE_GATE__MIN_KAPPA", "0.8")
    gate = Settings().gate
    assert gate.min_kappa == 0.8
    assert gate.min_eval_items == 50 and gate.rollback_cooldown_s == 60.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MIN_KAPPA", "1.5"),
        ("MIN_KAPPA", "nan"),
        ("MIN_KAPPA", "high"),
        ("MARGIN", "3"),
        ("MIN_EVAL_ITEMS", "0"),
        ("MIN_NEW_LABELS", "0"),
        ("INTERVAL_S", "0"),
        ("ROLLBACK_COOLDOWN_S", "-1"),
    ],
)
def test_invalid_gate_env_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"BORDERLINE_GATE__{name}", value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()
