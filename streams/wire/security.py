"""Secured connections (README: Security): Kafka over TLS and SASL, Redis over TLS with a
password. The one place that turns the settings into client arguments: every aiokafka producer,
consumer and admin client is built with ``**KafkaSecurity.of(settings.kafka).options()``, the
faust app with `KafkaSecurity.faust_credentials`, every Redis client with `redis_options`.

A combination that cannot work (a SASL mechanism without a username, a CA file that does not
exist, TLS files for a plaintext connection) is refused when the settings are read, in one line
naming the variables (`kafka_problem`, `redis_problem`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Self

from pydantic import BaseModel, Field, SecretStr, model_validator

__all__ = [
    "KAFKA_PROTOCOLS",
    "PLAINTEXT",
    "SASL_MECHANISMS",
    "KafkaProtocol",
    "KafkaSecurity",
    "SaslMechanism",
    "SecuredConnection",
    "kafka_problem",
    "redis_options",
    "redis_problem",
]

KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
KAFKA_PROTOCOLS: tuple[KafkaProtocol, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: tuple[SaslMechanism, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_KAFKA = "BORDERLINE_KAFKA__"
_REDIS = "BORDERLINE_REDIS__"


class SecuredConnection(BaseModel):
    """The TLS files of a client, shared by the Kafka and Redis settings, and the check of the
    whole section's security settings (``security_problem``) when it is read."""

    ssl_ca_file: Path | None = Field(default=None, description="CA (PEM) verifying the server")
    ssl_cert_file: Path | None = Field(default=None, description="client certificate (PEM)")
    ssl_key_file: Path | None = Field(default=None, description="its private key (PEM)")

    def security_problem(self) -> str | None:
        return None

    @model_validator(mode="after")
    def _secured(self) -> Self:
        if problem := self.security_problem():
            raise ValueError(problem)
        return self


class KafkaFields(Protocol):
    """The security part of `streams.wire.settings.KafkaSettings`."""

    @property
    def security_protocol(self) -> KafkaProtocol: ...
    @property
    def sasl_mechanism(self) -> SaslMechanism | None: ...
    @property
    def sasl_username(self) -> str | None: ...
    @property
    def sasl_password(self) -> SecretStr | None: ...
    @property
    def ssl_ca_file(self) -> Path | None: ...
    @property
    def ssl_cert_file(self) -> Path | None: ...
    @property
    def ssl_key_file(self) -> Path | None: ...


class RedisFields(Protocol):
    """The security part of `streams.wire.settings.RedisSettings`."""

    @property
    def url(self) -> SecretStr | None: ...
    @property
    def password(self) -> SecretStr | None: ...
    @property
    def ssl_ca_file(self) -> Path | None: ...
    @property
    def ssl_cert_file(self) -> Path | None: ...
    @property
    def ssl_key_file(self) -> Path | None: ...


def _missing_file(prefix: str, files: dict[str, Path | None]) -> str | None:
    for name, path in files.items():
        if path is not None and not path.is_file():
            return f"{prefix}{name.upper()}: {path} is not a file"
    return None


def _key_without_cert(prefix: str, fields: KafkaFields | RedisFields) -> str | None:
    if fields.ssl_key_file is not None and fields.ssl_cert_file is None:
        return f"{prefix}SSL_KEY_FILE is set without {prefix}SSL_CERT_FILE (the certificate)"
    return None


def _tls_files(fields: KafkaFields | RedisFields) -> dict[str, Path | None]:
    return {
        "ssl_ca_file": fields.ssl_ca_file,
        "ssl_cert_file": fields.ssl_cert_file,
        "ssl_key_file": fields.ssl_key_file,
    }


def kafka_problem(fields: KafkaFields) -> str | None:
    """What makes these Kafka settings unusable, in one line; None when they can work.

    >>> from types import SimpleNamespace as S
    >>> plain = dict(security_protocol="PLAINTEXT", sasl_mechanism=None, sasl_username=None,
    ...              sasl_password=None, ssl_ca_file=None, ssl_cert_file=None, ssl_key_file=None)
    >>> kafka_problem(S(**plain)) is None
    True
    >>> print(kafka_problem(S(**{**plain, "sasl_mechanism": "SCRAM-SHA-256"})))
    BORDERLINE_KAFKA__SASL_MECHANISM is set, but BORDERLINE_KAFKA__SECURITY_PROTOCOL is \
PLAINTEXT (SASL_PLAINTEXT or SASL_SSL use it)
    >>> print(kafka_problem(S(**{**plain, "security_protocol": "SASL_SSL"})))
    BORDERLINE_KAFKA__SECURITY_PROTOCOL=SASL_SSL needs BORDERLINE_KAFKA__SASL_USERNAME and \
BORDERLINE_KAFKA__SASL_PASSWORD
    """
    protocol = fields.security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    given = {
        "sasl_mechanism": fields.sasl_mechanism,
        "sasl_username": fields.sasl_username,
        "sasl_password": fields.sasl_password,
    }
    if sasl and (not fields.sasl_username or fields.sasl_password is None):
        return (
            f"{_KAFKA}SECURITY_PROTOCOL={protocol} needs {_KAFKA}SASL_USERNAME and "
            f"{_KAFKA}SASL_PASSWORD"
        )
    stray = [name for name, value in given.items() if value is not None and not sasl]
    stray += [name for name, value in _tls_files(fields).items() if value and not tls]
    if stray:
        uses = "SASL_PLAINTEXT or SASL_SSL" if stray[0].startswith("sasl") else "SSL or SASL_SSL"
        return (
            f"{_KAFKA}{stray[0].upper()} is set, but {_KAFKA}SECURITY_PROTOCOL is {protocol} "
            f"({uses} use it)"
        )
    return _key_without_cert(_KAFKA, fields) or _missing_file(_KAFKA, _tls_files(fields))


def redis_problem(fields: RedisFields) -> str | None:
    """What makes these Redis settings unusable, in one line; None when they can work.

    >>> from types import SimpleNamespace as S
    >>> plain = dict(url=SecretStr("redis://r:6379/0"), password=None, ssl_ca_file=None,
    ...              ssl_cert_file=None, ssl_key_file=None)
    >>> redis_problem(S(**plain)) is None
    True
    >>> print(redis_problem(S(**{**plain, "ssl_ca_file": Path("ca.pem")})))
    BORDERLINE_REDIS__SSL_CA_FILE is set, but BORDERLINE_REDIS__URL is not a rediss:// URL
    """
    url = fields.url.get_secret_value() if fields.url is not None else ""
    stray = [name for name, value in _tls_files(fields).items() if value is not None]
    if stray and not url.startswith("rediss://"):
        return f"{_REDIS}{stray[0].upper()} is set, but {_REDIS}URL is not a rediss:// URL"
    if fields.password is not None and _url_password(url):
        return f"{_REDIS}PASSWORD is set and {_REDIS}URL has a password too: keep one"
    return _key_without_cert(_REDIS, fields) or _missing_file(_REDIS, _tls_files(fields))


def _url_password(url: str) -> bool:
    netloc = url.split("://", 1)[-1].split("/", 1)[0]
    return "@" in netloc and ":" in netloc.rsplit("@", 1)[0]


def redis_options(fields: RedisFields) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url(url, **redis_options(settings.redis))``: the
    password (when not in the URL) and the TLS files (a ``rediss://`` URL turns TLS on; without
    a CA file the system's CAs verify the server).

    >>> redis_options(type("R", (), {"password": SecretStr("pw"), "ssl_ca_file": Path("ca"),
    ...     "ssl_cert_file": None, "ssl_key_file": None})())
    {'password': 'pw', 'ssl_ca_certs': 'ca'}
    """
    options: dict[str, Any] = {}
    if fields.password is not None:
        options["password"] = fields.password.get_secret_value()
    names = {"ssl_ca_file": "ssl_ca_certs", "ssl_cert_file": "ssl_certfile"}
    names["ssl_key_file"] = "ssl_keyfile"
    for name, path in _tls_files(fields).items():
        if path is not None:
            options[names[name]] = str(path)
    return options


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of a process connects: a plain value, made once from the settings
    (`of`) and passed down with the bootstrap servers.

    >>> PLAINTEXT.options()
    {'security_protocol': 'PLAINTEXT'}
    >>> sasl = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "svc", SecretStr("pw"))
    >>> sasl.options()["sasl_mechanism"], sasl.options()["sasl_plain_username"]
    ('SCRAM-SHA-512', 'svc')
    >>> sasl  # the password never shows
    KafkaSecurity(protocol='SASL_PLAINTEXT', mechanism='SCRAM-SHA-512', username='svc', \
password=SecretStr('**********'), ca_file=None, cert_file=None, key_file=None)
    """

    protocol: KafkaProtocol = "PLAINTEXT"
    mechanism: SaslMechanism | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def of(cls, fields: KafkaFields) -> KafkaSecurity:
        return cls(
            protocol=fields.security_protocol,
            mechanism=fields.sasl_mechanism,
            username=fields.sasl_username,
            password=fields.sasl_password,
            ca_file=fields.ssl_ca_file,
            cert_file=fields.ssl_cert_file,
            key_file=fields.ssl_key_file,
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A fresh context that verifies the broker (the CA file, else the system's CAs, and
        the host name) and presents the client certificate when one is set; None without TLS."""
        if not self.tls:
            return None
        from aiokafka.helpers import create_ssl_context  # the client library's own recipe

        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ca_file, certfile=self.cert_file, keyfile=self.key_file
        )
        return context

    def options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin, client)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            assert self.username and self.password is not None, "checked by kafka_problem"
            options["sasl_mechanism"] = self.mechanism or "PLAIN"
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password.get_secret_value()
        return options

    def faust_credentials(self) -> Any:
        """faust's ``broker_credentials`` for the same connection (None: plaintext), which its
        driver turns into the same aiokafka arguments for its producer and consumers."""
        if not (self.tls or self.sasl):
            return None
        from faust.auth import SASLCredentials, SSLCredentials

        if not self.sasl:
            return SSLCredentials(self.ssl_context())
        assert self.password is not None, "checked by kafka_problem"
        credentials = SASLCredentials(
            username=self.username,
            password=self.password.get_secret_value(),
            ssl_context=self.ssl_context(),
            mechanism=self.mechanism or "PLAIN",
        )
        return credentials


PLAINTEXT = KafkaSecurity()
"""No TLS, no SASL: the embedded broker, and a cluster on a trusted network."""
