"""Who made an adapter: the trainer signs every adapter that passed the kappa gate, together with
its gate report (Ed25519 over the canonical JSON of the adapter id, the manifest's sha256, which
pins the adapter file's sha256, and the gate report); workers verify the signature before they
load an adapter and refuse one that is unsigned, signed with another key, tampered with, or whose
signed report did not pass. Hashes prove integrity, the signature proves origin.

The base's own adapter (``bootstrap-adapter`` in the model folder) is not signed: it ships with
the model, like the base weights. `AdapterTrust` trusts it only when its bytes are exactly the ones
in the worker's own model folder.

Pure: no I/O, no clock, no randomness (keys are made and read by `adapters.registry.keys`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.registry.artifact import ADAPTER_FILE, MANIFEST_FILE, AdapterManifest, ArtifactError
from models.errors import BorderlineError

__all__ = [
    "SIGNATURE_FILE",
    "AdapterSignature",
    "AdapterTrust",
    "Refusal",
    "SignatureError",
    "SigningError",
    "key_id",
    "private_key_from_pem",
    "public_key_from_pem",
    "sign_adapter",
    "verify_adapter",
]

SIGNATURE_FILE = "adapter.sig.json"

Refusal = Literal["unsigned", "wrong_key", "bad_signature", "not_gated", "no_key"]
"""Why a signature was refused: the ``reason`` label of the refusal counter."""


class SigningError(BorderlineError):
    """A key that cannot be read, or a report that must not be signed (it did not pass)."""


class SignatureError(ArtifactError):
    """An adapter whose origin is not proven: ``reason`` says how (a `Refusal`)."""

    def __init__(self, message: str, reason: Refusal) -> None:
        super().__init__(message)
        self.reason: Refusal = reason


class AdapterSignature(BaseModel):
    """The signature document stored next to an adapter (``adapter.sig.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = 1
    adapter_id: str
    manifest_sha256: str
    gate: dict[str, Any] = Field(description="the gate report the trainer signed")
    key_id: str
    signature: str = Field(description="base64 Ed25519 signature of `payload()`")

    def payload(self) -> bytes:
        """The bytes that are signed: canonical JSON of everything but the signature."""
        return canonical(self.model_dump(exclude={"signature"}))


def canonical(doc: Mapping[str, Any]) -> bytes:
    """One byte string per document: sorted keys, no spaces, ASCII.

    >>> canonical({"b": 1, "a": [0.5, None]})
    b'{"a":[0.5,null],"b":1}'
    """
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of its raw bytes' sha256."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """The trainer's signing key from PEM (PKCS#8, unencrypted)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"the signing key is {type(key).__name__}, not Ed25519")
    return key


def public_key_from_pem(data: bytes) -> Ed25519PublicKey:
    """The workers' verify key from PEM (SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"the verify key is {type(key).__name__}, not Ed25519")
    return key


def _manifest(data: bytes) -> AdapterManifest:
    try:
        return AdapterManifest.model_validate_json(data)
    except ValidationError as exc:
        raise ArtifactError(f"adapter manifest is malformed: {exc}") from None


def sign_adapter(
    manifest: bytes, gate: Mapping[str, Any], key: Ed25519PrivateKey
) -> AdapterSignature:
    """Sign an adapter's ``manifest`` bytes with the ``gate`` report it passed. A report that did
    not pass, or that is about another adapter or policy, is refused (`SigningError`).

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    >>> m = AdapterManifest(adapter_id="a1", base_model_version="b", policy_version="v1",
    ...     labels=["benign"], files={"adapter.onnx_adapter": "00"}, created_at=0.0)
    >>> raw = m.model_dump_json().encode()
    >>> gate = {"adapter_id": "a1", "policy_version": "v1", "passed": True}
    >>> sign_adapter(raw, gate, key).key_id == key_id(key.public_key())
    True
    """
    parsed = _manifest(manifest)
    if gate.get("passed") is not True:
        raise SigningError(f"adapter {parsed.adapter_id} did not pass the gate: not signed")
    if (gate.get("adapter_id"), gate.get("policy_version")) != (
        parsed.adapter_id,
        parsed.policy_version,
    ):
        raise SigningError(
            f"the gate report is about {gate.get('adapter_id')} under "
            f"{gate.get('policy_version')}, not {parsed.adapter_id} under {parsed.policy_version}"
        )
    unsigned = AdapterSignature(
        adapter_id=parsed.adapter_id,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        gate=dict(gate),
        key_id=key_id(key.public_key()),
        signature="",
    )
    signature = base64.b64encode(key.sign(unsigned.payload())).decode()
    return unsigned.model_copy(update={"signature": signature})


def verify_adapter(files: Mapping[str, bytes], key: Ed25519PublicKey) -> AdapterSignature:
    """The signature of an adapter's ``files`` (manifest, adapter file, signature document),
    verified against ``key``; `SignatureError` with the reason otherwise. The adapter file's own
    sha256 is checked against the manifest when the artifact is placed (`AdapterArtifact`)."""
    manifest = files.get(MANIFEST_FILE)
    if manifest is None:
        raise ArtifactError(f"adapter has no {MANIFEST_FILE}")
    adapter_id = _manifest(manifest).adapter_id
    raw = files.get(SIGNATURE_FILE)
    if raw is None:
        raise SignatureError(f"adapter {adapter_id} is not signed by the trainer", "unsigned")
    try:
        signed = AdapterSignature.model_validate_json(raw)
        signature = base64.b64decode(signed.signature, validate=True)
    except (ValidationError, ValueError):
        raise SignatureError(
            f"adapter {adapter_id}: its signature document is malformed", "bad_signature"
        ) from None
    if signed.key_id != key_id(key):
        raise SignatureError(
            f"adapter {adapter_id} is signed with key {signed.key_id}, not the trainer's "
            f"{key_id(key)}",
            "wrong_key",
        )
    try:
        key.verify(signature, signed.payload())
    except InvalidSignature:
        raise SignatureError(
            f"adapter {adapter_id}: the signature does not verify", "bad_signature"
        ) from None
    if (signed.adapter_id, signed.manifest_sha256) != (
        adapter_id,
        hashlib.sha256(manifest).hexdigest(),
    ):
        raise SignatureError(
            f"adapter {adapter_id}: the signature is for another manifest "
            f"({signed.adapter_id}), tampered with",
            "bad_signature",
        )
    if signed.gate.get("passed") is not True:
        raise SignatureError(f"adapter {adapter_id}: its signed gate report failed", "not_gated")
    return signed


@dataclass(frozen=True)
class AdapterTrust:
    """What a worker loads: adapters signed with ``verify_key`` (None: no key configured, so
    none), and the base's own adapter when its files are byte for byte ``bootstrap`` (the
    manifest and adapter file in the worker's model folder).

    >>> try:
    ...     AdapterTrust(None).check({MANIFEST_FILE: b"{}"})
    ... except SignatureError as exc:
    ...     print(exc.reason)
    no_key
    """

    verify_key: Ed25519PublicKey | None
    bootstrap: Mapping[str, bytes] = field(default_factory=dict)

    def check(self, files: Mapping[str, bytes]) -> Literal["signed", "bootstrap"]:
        """How ``files`` are trusted; `SignatureError` when they are not."""
        if self.bootstrap and all(
            files.get(name) == self.bootstrap.get(name) for name in (MANIFEST_FILE, ADAPTER_FILE)
        ):
            return "bootstrap"
        if self.verify_key is None:
            raise SignatureError(
                "no verify key configured (BORDERLINE_ADAPTERS__VERIFY_KEY_FILE): only the "
                "base's own adapter is trusted",
                "no_key",
            )
        verify_adapter(files, self.verify_key)
        return "signed"
