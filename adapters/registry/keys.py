"""The trainer's signing key pair on disk: made once (`make_key_pair`, behind `borderline adapters
keygen` and the embedded mode's state folder), the private key read only where the trainer runs
(`read_signing_key`), the public key wherever a worker runs (`read_verify_key`). PEM files: the
private key PKCS#8 with mode 0600, the public key SubjectPublicKeyInfo."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from adapters.registry.signing import SigningError, private_key_from_pem, public_key_from_pem

__all__ = [
    "SIGNING_KEY_FILE",
    "VERIFY_KEY_FILE",
    "ensure_key_pair",
    "make_key_pair",
    "read_signing_key",
    "read_verify_key",
]

SIGNING_KEY_FILE = "adapter-signing.key"
VERIFY_KEY_FILE = "adapter-verify.pub"


def make_key_pair(directory: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a fresh Ed25519 pair into ``directory``: (private key path, public key path). An
    existing pair is kept unless ``overwrite`` (`SigningError`: replacing it would make every
    signed adapter unverifiable)."""
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / SIGNING_KEY_FILE, directory / VERIFY_KEY_FILE
    if not overwrite and (private.exists() or public.exists()):
        raise SigningError(
            f"{directory} already holds a key pair ({private.name}, {public.name}); keeping it"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def ensure_key_pair(directory: Path) -> tuple[Path, Path]:
    """The pair in ``directory``, made on first use (the embedded mode's own keys)."""
    private, public = directory / SIGNING_KEY_FILE, directory / VERIFY_KEY_FILE
    if private.is_file() and public.is_file():
        return private, public
    return make_key_pair(directory, overwrite=True)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def read_signing_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "signing key")
    try:
        return private_key_from_pem(data)
    except SigningError as exc:
        raise SigningError(f"{path}: {exc}") from None


def read_verify_key(path: Path) -> Ed25519PublicKey:
    data = _read(path, "verify key")
    try:
        return public_key_from_pem(data)
    except SigningError as exc:
        raise SigningError(f"{path}: {exc}") from None
