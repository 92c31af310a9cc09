"""Unit tests for streams.wire.security: bad combinations of the Kafka and Redis security
settings are one line naming the variables (through `borderline config show` too), the options
reach aiokafka's clients and faust's driver exactly as set (no SASL user can be made on the
embedded tansu, so this is where SASL is tested), secrets stay masked, and every Kafka client in
the service is built through the one place (a source check that fails on a client built without
it)."""

from __future__ import annotations

import ast
import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from streams.cli.main import main
from streams.wire.security import PLAINTEXT, KafkaSecurity, redis_options
from streams.wire.settings import KafkaSettings, RedisSettings, Settings, masked
from tests.tls_support import ThrowawayCA, make_ca

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(autouse=True)
def _clean_env(no_borderline_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BORDERLINE_SERVICES__STATE_DIR", str(tmp_path / "services"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


def _refusal(**kafka: Any) -> str:
    with pytest.raises(ValidationError) as info:
        KafkaSettings(**kafka)
    return str(info.value.errors()[0]["msg"])


def test_sasl_mechanism_without_username_is_refused_naming_the_variables() -> None:
    says = _refusal(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256")
    assert "BORDERLINE_KAFKA__SECURITY_PROTOCOL=SASL_SSL needs" in says
    assert "BORDERLINE_KAFKA__SASL_USERNAME" in says
    says = _refusal(sasl_mechanism="SCRAM-SHA-256", sasl_username="svc")
    assert "BORDERLINE_KAFKA__SASL_MECHANISM is set, but" in says and "PLAINTEXT" in says


def test_tls_files_need_a_tls_protocol_and_must_exist(tmp_path: Path, ca: ThrowawayCA) -> None:
    says = _refusal(ssl_ca_file=ca.ca_file)
    assert "BORDERLINE_KAFKA__SSL_CA_FILE is set, but" in says and "SSL or SASL_SSL" in says
    missing = tmp_path / "nope" / "ca.pem"
    says = _refusal(security_protocol="SSL", ssl_ca_file=missing)
    assert says.endswith(f"BORDERLINE_KAFKA__SSL_CA_FILE: {missing} is not a file")
    says = _refusal(security_protocol="SSL", ssl_key_file=ca.client_key)
    assert "BORDERLINE_KAFKA__SSL_KEY_FILE is set without BORDERLINE_KAFKA__SSL_CERT_FILE" in says
    assert _refusal(security_protocol="TLS").startswith("Input should be")


def test_redis_tls_files_need_rediss_and_one_password(ca: ThrowawayCA) -> None:
    with pytest.raises(ValidationError, match="BORDERLINE_REDIS__URL is not a rediss://"):
        RedisSettings(url=SecretStr("redis://r:6379/0"), ssl_ca_file=ca.ca_file)
    with pytest.raises(ValidationError, match="has a password too: keep one"):
        RedisSettings(url=SecretStr("rediss://:pw@r:6379/0"), password=SecretStr("pw"))
    with pytest.raises(ValidationError, match=r"BORDERLINE_REDIS__SSL_CERT_FILE: .* not a file"):
        RedisSettings(url=SecretStr("rediss://r/0"), ssl_cert_file=ca.ca_file.with_name("x"))
    ok = RedisSettings(url=SecretStr("rediss://user@r:6380/0"), password=SecretStr("pw"))
    assert redis_options(ok) == {"password": "pw"}


def test_a_bad_combination_is_one_line_at_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("BORDERLINE_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("BORDERLINE_KAFKA__SSL_CA_FILE", str(tmp_path / "absent.pem"))
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert f"BORDERLINE_KAFKA__SSL_CA_FILE: {tmp_path / 'absent.pem'} is not a file" in err


def test_passwords_are_masked_and_reach_children_unmasked(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.embedded.launcher import settings_env

    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", "k:9093")
    monkeypatch.setenv("BORDERLINE_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("BORDERLINE_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("BORDERLINE_KAFKA__SASL_PASSWORD", "kafka-hunter2")
    monkeypatch.setenv("BORDERLINE_REDIS__URL", "rediss://r:6380/0")
    monkeypatch.setenv("BORDERLINE_REDIS__PASSWORD", "redis-hunter2")
    settings = Settings()
    shown = str(masked(settings)) + repr(settings) + repr(KafkaSecurity.of(settings.kafka))
    assert "hunter2" not in shown
    env = settings_env(settings)  # a worker started by the launcher reads the same settings
    assert env["BORDERLINE_KAFKA__SASL_PASSWORD"] == "kafka-hunter2"
    assert env["BORDERLINE_REDIS__PASSWORD"] == "redis-hunter2"


def _client_of(build: Any) -> Any:
    """aiokafka's internal client of a producer/consumer/admin, made in a running loop."""

    async def make() -> Any:
        made = build()
        inner = getattr(made, "_client", None) or made.client
        return inner

    return asyncio.run(make())


@pytest.mark.parametrize(
    "kind", [AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient], ids=lambda k: k.__name__
)
def test_sasl_ssl_reaches_every_aiokafka_client(kind: type, ca: ThrowawayCA) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("pw"),
        ssl_ca_file=ca.ca_file,
        ssl_cert_file=ca.client_cert,
        ssl_key_file=ca.client_key,
    )
    options = KafkaSecurity.of(kafka).options()
    client = _client_of(lambda: kind(bootstrap_servers="k:9093", **options))
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert (client._sasl_plain_username, client._sasl_plain_password) == ("svc", "pw")
    context = client._ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert any("borderline test CA" in str(c["subject"]) for c in context.get_ca_certs())


def test_sasl_plaintext_defaults_to_plain_and_plaintext_adds_nothing() -> None:
    sasl = KafkaSecurity.of(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password=SecretStr("p")
        )
    )
    assert sasl.options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }
    assert PLAINTEXT.options() == {"security_protocol": "PLAINTEXT"}
    assert PLAINTEXT.faust_credentials() is None


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_gets_the_same_connection(protocol: str, ca: ThrowawayCA) -> None:
    sasl = protocol.startswith("SASL")
    security = KafkaSecurity(
        protocol,  # type: ignore[arg-type]
        mechanism="SCRAM-SHA-256" if sasl else None,
        username="svc" if sasl else None,
        password=SecretStr("pw") if sasl else None,
        ca_file=ca.ca_file if protocol.endswith("SSL") else None,
    )
    faust_side = credentials_to_aiokafka_auth(security.faust_credentials())
    ours = security.options()
    assert faust_side.keys() >= ours.keys() - {"ssl_context"}
    for name in ours.keys() - {"ssl_context"}:
        assert faust_side[name] == ours[name], name
    assert isinstance(faust_side.get("ssl_context"), ssl.SSLContext) == protocol.endswith("SSL")


def test_the_faust_app_is_made_with_the_credentials(ca: ThrowawayCA) -> None:
    from streams.service.app import make_app

    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers="k:9093", security_protocol="SSL", ssl_ca_file=ca.ca_file
        ),
        redis=RedisSettings(url=SecretStr("redis://r/0")),
    )
    app = make_app(settings, app_id="security-test")
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)


# The source check. Embedded-only code is exempt: the launcher's readiness probe and the
# benchmarks start their own plaintext broker and never reach a configured one.
EXEMPT = ("streams/bench/", "streams/embedded/")
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}


def _sources() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted((REPO / "streams").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        out.append((rel, ast.parse(path.read_text(), filename=rel)))
    return out


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def test_every_kafka_client_is_built_with_the_security_options() -> None:
    bare = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _name(node.func) in CLIENTS):
                continue
            spread = [k.value for k in node.keywords if k.arg is None]
            uses = any(_name(v.func if isinstance(v, ast.Call) else v) == "options" for v in spread)
            if not uses and not rel.startswith(EXEMPT):
                bare.append(f"{rel}:{node.lineno} {_name(node.func)}")
    assert not bare, f"built without **KafkaSecurity.options(): {bare}"


def _takes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(a.arg == "security" for a in function.args.kwonlyargs)


def test_every_caller_in_the_service_passes_security_on() -> None:
    sources = _sources()
    takes: set[str] = set()  # module-level functions and classes that take ``security``
    for _rel, tree in sources:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _takes(node):
                takes.add(node.name)
            if isinstance(node, ast.ClassDef):
                inits = [f for f in node.body if isinstance(f, ast.FunctionDef)]
                if any(f.name == "__init__" and _takes(f) for f in inits):
                    takes.add(node.name)
    assert {"ensure_topics", "open_reader", "open_journal", "TopicWatch"} <= takes
    forgotten = []
    for rel, tree in sources:
        if rel.startswith(EXEMPT):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id not in takes:
                    continue
                given = {k.arg for k in node.keywords}
                if "security" not in given and None not in given:
                    forgotten.append(f"{rel}:{node.lineno} {_name(node.func)}")
    assert not forgotten, f"security not passed on: {forgotten}"
