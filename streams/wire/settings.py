"""One typed settings object, read once at the entry point (`Settings()`), passed down as plain
values. Environment variables use the prefix ``BORDERLINE_`` and ``__`` between sections, e.g.
``BORDERLINE_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``BORDERLINE_WORKER__BATCH_MAX_SIZE=64``.

Every default serves the embedded mode: with no Kafka and Redis addresses set, borderline starts
its own broker (tansu) and redis-server on free loopback ports. Setting both addresses turns the
embedded services off.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.wire.security import (
    KafkaProtocol,
    SaslMechanism,
    SecuredConnection,
    kafka_problem,
    redis_problem,
)
from streams.wire.topics import TopicNames

__all__ = [
    "AdapterSettings",
    "CacheSettings",
    "ConsoleSettings",
    "DriftSettings",
    "GateSettings",
    "KafkaSettings",
    "MetricsSettings",
    "ModelSettings",
    "PolicySettings",
    "RedisSettings",
    "ResilienceSettings",
    "ReviewSettings",
    "ServicesSettings",
    "Settings",
    "SettingsError",
    "WorkerSettings",
    "check_environment",
    "default_secret_warning",
    "environment_names",
    "masked",
]

DEFAULT_KEY_SECRET = "borderline-embedded-only-reviewer-key-secret"
_LOOPBACK = ("127.", "localhost", "[::1]", "::1")

ENV_PREFIX = "BORDERLINE_"

RETIRED = {
    "BORDERLINE_WORKER__RETRY_ATTEMPTS": "BORDERLINE_RESILIENCE__OUTAGE_BUDGET_S (seconds, "
    "not attempts)",
    "BORDERLINE_WORKER__RETRY_BACKOFF_S": "BORDERLINE_RESILIENCE__BACKOFF_BASE_S",
}
"""Settings that were replaced, with what replaces them (README: Configuration)."""


class SettingsError(ValueError):
    """A setting that does not exist or does not validate; the message names the variable."""


class KafkaSettings(SecuredConnection):
    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port[,host:port]; unset means the embedded broker is used",
    )
    partitions: int = Field(default=4, ge=1, description="partitions of every topic created")
    replication_factor: int = Field(default=1, ge=1)
    topics: TopicNames = Field(default_factory=TopicNames)
    app_id: str = Field(default="borderline-classify", description="consumer group of workers")
    session_timeout_s: float = Field(
        default=10.0, gt=0, description="a worker silent this long loses its partitions"
    )
    rebalance_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    fetch_max_wait_s: float = Field(
        default=0.05, gt=0, le=10, description="longest a fetch may wait on the broker"
    )
    security_protocol: KafkaProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_*; unset: PLAIN)"
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    def security_problem(self) -> str | None:
        return kafka_problem(self)


class RedisSettings(SecuredConnection):
    url: SecretStr | None = Field(
        default=None, description="redis[s]://[:password@]host:port/db; unset means embedded"
    )
    key_prefix: str = Field(default="borderline", min_length=1)
    review_dedupe_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    password: SecretStr | None = Field(default=None, description="or in the URL, not both")

    def security_problem(self) -> str | None:
        return redis_problem(self)


class WorkerSettings(BaseModel):
    batch_max_size: int = Field(default=16, ge=1, le=1024)
    batch_max_wait_s: float = Field(default=0.05, gt=0, le=10)
    max_text_bytes: int = Field(default=64_000, ge=1)
    scorer_threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0=auto")
    tokenise_ahead: bool = Field(
        default=True, description="tokenise the next batch while the current one is scored"
    )
    web_port: int = Field(default=0, ge=0, le=65535, description="faust's web server; 0=off")
    adapter_cache_dir: Path = Field(
        default=Path(".borderline/adapter-cache"), description="verified adapters from Redis"
    )
    adapter_poll_s: float = Field(
        default=2.0, gt=0, description="registry poll, besides its pub/sub channel"
    )


class CacheSettings(BaseModel):
    """The decision cache of classify workers (``streams.service.shared_cache``): repeated
    creatives are decided once per adapter and policy version, in process and through Redis."""

    enabled: bool = Field(default=True, description="off: every item is scored by the model")
    max_items: int = Field(default=20_000, ge=1, description="in-process entries at most")
    max_bytes: int = Field(default=48 * 2**20, ge=1024, description="in-process bytes at most")
    redis_ttl_s: int = Field(default=24 * 3600, ge=1, description="shared entries live this long")
    redis_timeout_s: float = Field(
        default=0.05, gt=0, le=5, description="a shared lookup slower than this is a miss"
    )


class ResilienceSettings(BaseModel):
    """How every process (worker, collector, trainer, panel) rides out a broker or Redis outage:
    calls are retried with exponential backoff and full jitter until the target has been
    unreachable for ``outage_budget_s``, then the process exits with one line."""

    outage_budget_s: float = Field(
        default=60.0, gt=0, description="how long an unreachable broker or Redis is waited out"
    )
    backoff_base_s: float = Field(
        default=0.2, gt=0, description="ceiling of the first wait; doubles per failure"
    )
    backoff_max_s: float = Field(default=5.0, gt=0, description="ceiling of any wait")
    call_timeout_s: float = Field(
        default=10.0, gt=0, description="longest one delivery to the broker may take"
    )
    log_interval_s: float = Field(
        default=10.0, gt=0, description="during an outage, one summary line per interval"
    )

    @model_validator(mode="after")
    def _ceilings(self) -> ResilienceSettings:
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_base_s ({self.backoff_base_s}) must not exceed backoff_max_s "
                f"({self.backoff_max_s})"
            )
        return self


class ModelSettings(BaseModel):
    dir: Path = Field(default=Path(".borderline/model"), description="output of `model init`")
    max_length: int = Field(default=128, ge=8, le=512, description="tokens per item")


class PolicySettings(BaseModel):
    version: str = Field(default="v1", min_length=1)
    category: str = Field(default="violating", min_length=1)
    block_threshold: float = Field(default=0.5, ge=0, le=1)
    review_low: float = Field(default=0.3, ge=0, le=1)
    review_high: float = Field(default=0.7, ge=0, le=1)

    @model_validator(mode="after")
    def _band(self) -> PolicySettings:
        if not self.review_low <= self.review_high:
            raise ValueError(
                f"review_low ({self.review_low}) must not exceed review_high ({self.review_high})"
            )
        return self


class ReviewSettings(BaseModel):
    labels_per_hour: float = Field(default=1200.0, gt=0, description="review budget: send rate")
    max_open: int = Field(default=300, ge=1, description="review budget: unanswered requests")
    audit_rate: float = Field(default=0.02, ge=0, le=1, description="random audit share")
    share_uncertain: float = Field(default=0.5, ge=0, le=1, description="budget share")
    share_boundary: float = Field(default=0.35, ge=0, le=1, description="budget share")
    share_audit: float = Field(default=0.15, ge=0, le=1, description="budget share")
    overlap_rate: float = Field(
        default=0.1, ge=0, le=1, description="non-audit requests that ask for two opinions"
    )
    evidence_refresh_s: float = Field(default=5.0, gt=0, description="labelled index refresh")
    window_size: int = Field(default=1000, ge=10, description="items mined for boundary pairs")
    mine_every: int = Field(default=200, ge=1, description="new items between two minings")
    max_pairs: int = Field(default=8, ge=0, description="boundary pairs per mining")
    evidence_k: int = Field(default=3, ge=0, description="labelled neighbours shown as evidence")
    agreement_threshold: float = Field(
        default=0.8, ge=0, le=1, description="reviewers below it are excluded from training"
    )
    min_shared: int = Field(default=25, ge=1, description="shared items before kappa counts")
    min_panel: int = Field(
        default=3, ge=3, description="reviewers needed before any of them can be excluded"
    )
    trust_confidence: float = Field(
        default=0.95, ge=0.5, lt=1, description="exclude when kappa's upper bound at it is low"
    )
    eval_share: float = Field(default=0.4, gt=0, lt=1, description="consensus labels held out")
    key_secret: SecretStr = Field(
        default=SecretStr(DEFAULT_KEY_SECRET),
        description="reviewers' signing keys derive from it: set your own outside embedded mode",
    )
    label_max_skew_s: float = Field(
        default=300.0, ge=0, description="how far in the future a label's time may be"
    )
    seed: int = 0


class DriftSettings(BaseModel):
    reference_size: int = Field(default=1000, ge=50, description="items in the reference window")
    window_size: int = Field(default=500, ge=50, description="items in the recent window")
    input_threshold: float = Field(default=1e-3, gt=0, lt=1, description="p-value (Bonferroni)")
    prediction_threshold: float = Field(default=1e-3, gt=0, lt=1, description="p-value")
    concept_threshold: float = Field(
        default=0.25, gt=0, lt=1, description="disagreement rate with expert consensus"
    )
    seed: int = 0


class GateSettings(BaseModel):
    """The kappa gate and the trainer's pace: one default each, overridden by the environment
    (``BORDERLINE_GATE__MIN_KAPPA``, ...) and by the `borderline trainer` flags."""

    min_kappa: float = Field(
        default=0.7, ge=-1, le=1, description="Cohen's kappa every live adapter must reach"
    )
    margin: float = Field(
        default=0.02, ge=-2, le=2, description="how much a candidate must beat the incumbent by"
    )
    min_eval_items: int = Field(
        default=50, ge=1, description="evaluation labels the gate needs to judge at all"
    )
    min_new_labels: int = Field(
        default=100, ge=1, description="new training labels that trigger a round"
    )
    train_examples: int = Field(
        default=800,
        ge=1,
        description="examples a candidate sees in training: epochs = this / labels, 3 to 10",
    )
    interval_s: float = Field(default=15.0, gt=0, description="the trainer's look every so often")
    rollback_cooldown_s: float = Field(
        default=60.0, ge=0, description="no promotion this soon after a promotion or rollback"
    )
    lease_ttl_s: float = Field(
        default=30.0, gt=0, description="the one-trainer lease in Redis lapses this long unrenewed"
    )


class AdapterSettings(BaseModel):
    """The adapter signing keys (README: Security). The trainer signs every adapter that passes
    the gate with the private key; workers load only adapters that verify with the public key
    (and the base's own adapter from their model folder). Unset in embedded mode: a pair is made
    in the services' state folder."""

    signing_key_file: Path | None = Field(
        default=None, description="the trainer's Ed25519 private key (PEM); only where it runs"
    )
    verify_key_file: Path | None = Field(
        default=None, description="the trainer's public key (PEM) that workers verify with"
    )


class MetricsSettings(BaseModel):
    """/metrics, /healthz and /readyz of every process, on one port."""

    port: int = Field(default=9464, ge=0, le=65535, description="Prometheus endpoint; 0=off")
    host: str = "127.0.0.1"
    stuck_after_s: float = Field(
        default=300.0, gt=0, description="/healthz fails: lag > 0 and no progress for this long"
    )
    trainer_stuck_after_s: float = Field(
        default=3600.0, gt=0, description="/healthz of the trainer fails: one step this long"
    )
    lag_interval_s: float = Field(
        default=5.0, gt=0, description="consumer lag read from the broker every so often"
    )


class ServicesSettings(BaseModel):
    state_dir: Path = Field(
        default=Path(".borderline/services"), description="pids and ports of `services up`"
    )
    tansu_bin: Path | None = Field(default=None, description="override the bundled tansu binary")
    redis_bin: Path | None = Field(default=None, description="override redis-server on PATH")
    start_timeout_s: float = Field(default=20.0, gt=0)


class ConsoleSettings(BaseModel):
    """The reviewer console (`borderline console`)."""

    lease_s: float = Field(default=300.0, gt=0, description="a claimed task is held this long")
    request_max_age_s: float = Field(
        default=24 * 3600.0, gt=0, description="an unanswered review request is closed as expired"
    )
    undo_s: float = Field(default=5.0, ge=0, description="a label can be undone this long")
    opinions: int = Field(default=1, ge=1, le=10, description="labels wanted per requested item")
    session_ttl_s: int = Field(default=8 * 3600, ge=60, description="idle session lifetime")
    login_attempts: int = Field(default=5, ge=1, description="wrong passwords before a lockout")
    login_window_s: int = Field(default=300, ge=1, description="throttle window (user, address)")
    secure_cookies: bool = Field(
        default=False, description="mark cookies Secure (set when TLS is terminated in front)"
    )
    show_score: bool = Field(default=False, description="show the model's score to reviewers")
    hotkeys: str = Field(
        default="",
        pattern=r"^[a-qtv-z0-9]{0,9}$",
        description="answer keys in order, benign first, then the policy's categories, e.g. "
        "'jkl' (default 1, 2, 3...; r, s and u are taken)",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BORDERLINE_", env_nested_delimiter="__", extra="ignore"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    adapters: AdapterSettings = Field(default_factory=AdapterSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    data_dir: Path = Field(default=Path(".borderline/data"), description="corpus cache")

    @property
    def embedded(self) -> bool:
        """True when borderline must start its own broker and Redis."""
        return self.kafka.bootstrap_servers is None or self.redis.url is None

    @model_validator(mode="after")
    def _both_or_neither(self) -> Settings:
        if (self.kafka.bootstrap_servers is None) != (self.redis.url is None):
            missing = "REDIS__URL" if self.redis.url is None else "KAFKA__BOOTSTRAP_SERVERS"
            raise ValueError(
                "set both BORDERLINE_KAFKA__BOOTSTRAP_SERVERS and BORDERLINE_REDIS__URL to use "
                f"external services, or neither for the embedded ones (BORDERLINE_{missing} "
                "is missing)"
            )
        return self

    def with_services(self, bootstrap_servers: str, redis_url: str) -> Settings:
        """A copy pointing at the given (e.g. freshly started embedded) services."""
        kafka = self.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        redis = self.redis.model_copy(update={"url": SecretStr(redis_url)})
        return self.model_copy(update={"kafka": kafka, "redis": redis})


def default_secret_warning(settings: Settings) -> str | None:
    """A warning when the reviewers' signing keys derive from the built-in key secret while the
    broker is beyond this machine: the secret is in the source, so anyone who can produce to
    the labels topic could sign labels as any reviewer. None in embedded mode (loopback).

    >>> local = Settings().with_services("127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    >>> default_secret_warning(local) is None
    True
    >>> remote = Settings().with_services("kafka-1.prod:9093", "redis://cache.prod:6379/0")
    >>> default_secret_warning(remote).split(":")[0]
    'BORDERLINE_REVIEW__KEY_SECRET is the built-in default'
    """
    if settings.review.key_secret.get_secret_value() != DEFAULT_KEY_SECRET:
        return None
    hosts = (settings.kafka.bootstrap_servers or "").split(",")
    if all(h.strip().startswith(_LOOPBACK) for h in hosts):
        return None
    return (
        "BORDERLINE_REVIEW__KEY_SECRET is the built-in default: it is in the source, so anyone "
        "who can produce to the labels topic can sign labels as any reviewer; set your own "
        "(README: Security)"
    )


def environment_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> list[str]:
    """Every environment variable the settings read, e.g. ``BORDERLINE_KAFKA__PARTITIONS``.

    >>> "BORDERLINE_GATE__MIN_KAPPA" in environment_names()
    True
    """
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += environment_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return sorted(names)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a ``BORDERLINE_*`` variable that names no setting (a typo would otherwise be
    ignored in silence), naming the closest valid one.

    >>> try:
    ...     check_environment({"BORDERLINE_GATE__MIN_KAPA": "0.8"})
    ... except SettingsError as exc:
    ...     print(exc)
    unknown setting BORDERLINE_GATE__MIN_KAPA (did you mean BORDERLINE_GATE__MIN_KAPPA?)
    """
    valid = environment_names()
    sections = {n.rsplit("__", 1)[0] for n in valid if "__" in n}  # a whole section, as JSON
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in valid or upper in sections:
            continue
        if upper in RETIRED:
            raise SettingsError(f"{variable} was replaced by {RETIRED[upper]}")
        # compare what follows the prefix: every name shares it
        bare = [n[len(ENV_PREFIX) :] for n in valid]
        close = difflib.get_close_matches(upper[len(ENV_PREFIX) :], bare, n=1, cutoff=0.75)
        hint = (
            f" (did you mean {ENV_PREFIX}{close[0]}?)"
            if close
            else " (see `borderline config show`)"
        )
        raise SettingsError(f"unknown setting {variable}{hint}")


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain values, secrets shown as ``**********``."""
    return settings.model_dump(mode="json")
