"""Secured connections over real TLS, with a throwaway CA made here: a broker reached only
through a TLS terminator that requires client certificates (`tls_proxy`: tansu's own TLS does
not work, see there), and Debian's redis-server with TLS only and ``requirepass``. A classify
worker decides items over both, the producer, consumer and admin client go through the one
place (`streams.wire.security`), the Redis stores work over ``rediss://`` with the password, and
a client without the CA, without a certificate, without TLS or with a wrong password is refused
(the CLI in one line). SASL is not tested here: no SCRAM user can be made on tansu 0.6
(README: Security); the settings reaching aiokafka and faust are tested in
tests/unit/streams/wire/test_security.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from adapters.labels.dataset import read_jsonl, sample
from adapters.labels.store import LabelStore
from adapters.registry.keys import ensure_key_pair
from streams.demo.replay import replay_items
from streams.embedded.launcher import settings_env, start_worker
from streams.service.reader import read_topic
from streams.service.retry import open_redis
from streams.wire.security import PLAINTEXT, KafkaSecurity
from streams.wire.settings import Settings
from streams.wire.topics import TopicError, TopicNames, ensure_topics
from tests.tls_support import ThrowawayCA, make_ca, tls_redis_server

from .tls_proxy import start_tls_broker

pytestmark = pytest.mark.integration

PASSWORD = "redis-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Secured:
    ca: ThrowawayCA
    bootstrap_servers: str
    redis_port: int
    tmp: Path

    def settings(self, **kafka: object) -> Settings:
        tag = uuid.uuid4().hex[:8]
        private, public = ensure_key_pair(self.tmp / "adapter-keys")
        return Settings.model_validate(
            {
                "kafka": {
                    "bootstrap_servers": self.bootstrap_servers,
                    "topics": TopicNames().prefixed(f"tls{tag}.").model_dump(),
                    "partitions": 2,
                    "app_id": f"classify-tls-{tag}",
                    "security_protocol": "SSL",
                    "ssl_ca_file": str(self.ca.ca_file),
                    "ssl_cert_file": str(self.ca.client_cert),
                    "ssl_key_file": str(self.ca.client_key),
                    **kafka,
                },
                "redis": {
                    "url": f"rediss://127.0.0.1:{self.redis_port}/0",
                    "password": PASSWORD,
                    "key_prefix": f"tls-{tag}",
                    "ssl_ca_file": str(self.ca.ca_file),
                    "ssl_cert_file": str(self.ca.client_cert),
                    "ssl_key_file": str(self.ca.client_key),
                },
                "worker": {"scorer_threads": 1},
                "adapters": {"signing_key_file": str(private), "verify_key_file": str(public)},
            }
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("secured")
    ca = make_ca(tmp / "ca")
    with (
        start_tls_broker(ca, tmp / "tansu.log") as bootstrap,
        tls_redis_server(ca, tmp, password=PASSWORD) as redis_port,
    ):
        yield Secured(ca, bootstrap, redis_port, tmp)


def test_a_worker_decides_items_over_tls_and_a_password_protected_redis(
    secured: Secured, model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    settings = secured.settings()
    settings = settings.model_copy(
        update={"model": settings.model.model_copy(update={"dir": model_dir})}
    )
    kafka, security = settings.kafka, KafkaSecurity.of(settings.kafka)
    assert kafka.bootstrap_servers
    asyncio.run(ensure_topics(kafka.bootstrap_servers, kafka.topics.all(), 2, security=security))
    worker = start_worker(settings, "tls-w1", tmp_path / "worker.log")
    try:
        items = sample(read_jsonl(corpus), 40, seed=5)
        ids = {i.item_id for i in items}
        asyncio.run(
            replay_items(kafka.bootstrap_servers, kafka.topics.items, items, security=security)
        )
        decisions = asyncio.run(
            read_topic(
                kafka.bootstrap_servers,
                kafka.topics.decisions,
                until=lambda got: ids <= {d["item_id"] for d in got},
                timeout_s=90,
                security=security,
            )
        )
    finally:
        worker.stop(timeout_s=15)
    assert ids <= {d["item_id"] for d in decisions}, (
        f"{len(ids - {d['item_id'] for d in decisions})} of 40 items undecided; see {worker.log}"
    )

    async def stores() -> set[str]:
        redis = open_redis(settings.redis)
        try:
            store = LabelStore(redis, settings.redis.key_prefix)
            await store.register_reviewers(["alice", "bob"])
            return await store.registered()
        finally:
            await redis.aclose()

    assert asyncio.run(stores()) >= {"alice", "bob"}


@pytest.mark.parametrize(
    "kafka",
    [
        {"ssl_ca_file": "other"},  # trusts another CA: the broker's certificate fails
        {"ssl_cert_file": None, "ssl_key_file": None},  # no client certificate
        {
            "security_protocol": "PLAINTEXT",
            "ssl_ca_file": None,
            "ssl_cert_file": None,
            "ssl_key_file": None,
        },
    ],
    ids=["other-ca", "no-client-cert", "plaintext"],
)
def test_a_kafka_client_without_the_ca_a_certificate_or_tls_is_refused(
    secured: Secured, kafka: dict[str, object]
) -> None:
    if kafka.get("ssl_ca_file") == "other":
        kafka = {"ssl_ca_file": str(secured.ca.other_ca_file)}
    settings = secured.settings(**kafka)
    security = KafkaSecurity.of(settings.kafka)
    assert security != PLAINTEXT or kafka["security_protocol"] == "PLAINTEXT"
    with pytest.raises((TopicError, KafkaConnectionError, asyncio.TimeoutError)):
        asyncio.run(
            ensure_topics(secured.bootstrap_servers, ["refused"], 1, timeout_s=5, security=security)
        )


def _cli(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_redis_with_a_wrong_password_or_without_tls_is_refused_in_one_line(
    secured: Secured,
) -> None:
    good = secured.settings()
    ok = _cli(good, "reviewers", "list")
    assert ok.returncode == 0, ok.stderr

    wrong = good.model_copy(
        update={"redis": good.redis.model_copy(update={"password": SecretStr("wrong-one")})}
    )
    plain_url = SecretStr(f"redis://127.0.0.1:{secured.redis_port}/0")
    no_tls = good.model_copy(
        update={
            "redis": good.redis.model_copy(
                update={
                    "url": plain_url,
                    "ssl_ca_file": None,
                    "ssl_cert_file": None,
                    "ssl_key_file": None,
                }
            )
        }
    )
    for settings, says in ((wrong, "invalid username-password"), (no_tls, "cannot reach Redis")):
        done = _cli(settings, "reviewers", "list")
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith("borderline: error: ") and says in lines[0]
        assert PASSWORD not in done.stderr and "wrong-one" not in done.stderr

    async def refused(settings: Settings) -> None:
        redis = open_redis(settings.redis)
        try:
            await redis.ping()
        finally:
            await redis.aclose()

    with pytest.raises(AuthenticationError):
        asyncio.run(refused(wrong))
    with pytest.raises(RedisConnectionError):
        asyncio.run(refused(no_tls))
