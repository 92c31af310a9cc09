"""A throwaway certificate authority for the TLS tests: a CA, a server certificate for
127.0.0.1 and localhost, and a client certificate, all signed here with `cryptography` and
written as PEM files. Nothing is trusted outside the test that made them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ThrowawayCA", "make_ca", "tls_redis_server"]


@dataclass(frozen=True)
class ThrowawayCA:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_file: Path  # a CA that signed none of these: a client trusting it is refused


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _self_signed(common: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_ca(folder: Path) -> ThrowawayCA:
    """A CA with one server and one client certificate, as PEM files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca, ca_key = _self_signed("borderline test CA")
    other, _ = _self_signed("some other CA")
    out = ThrowawayCA(
        ca_file=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca_file=folder / "other-ca.pem",
    )
    out.ca_file.write_bytes(ca.public_bytes(pem))
    out.other_ca_file.write_bytes(other.public_bytes(pem))
    for cert_path, key_path, server in (
        (out.server_cert, out.server_key, True),
        (out.client_cert, out.client_key, False),
    ):
        cert, key = _issue(ca, ca_key, "127.0.0.1" if server else "borderline", server=server)
        cert_path.write_bytes(cert.public_bytes(pem))
        _write_key(key, key_path)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tls_pong(port: int, ca: ThrowawayCA) -> bool:
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    context.load_cert_chain(str(ca.client_cert), str(ca.client_key))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@contextmanager
def tls_redis_server(ca: ThrowawayCA, directory: Path, *, password: str) -> Iterator[int]:
    """Debian's redis-server with TLS only (``--port 0``), client certificates required,
    ``requirepass``; yields its TLS port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    port = _free_port()
    argv = [
        binary,
        "--port", "0",
        "--bind", "127.0.0.1",
        "--tls-port", str(port),
        "--tls-cert-file", str(ca.server_cert),
        "--tls-key-file", str(ca.server_key),
        "--tls-ca-cert-file", str(ca.ca_file),
        "--tls-auth-clients", "yes",
        "--requirepass", password,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    log = directory / "redis-tls.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _tls_pong(port, ca):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server with TLS did not start: {log.read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
