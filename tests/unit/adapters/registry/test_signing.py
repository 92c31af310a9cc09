"""Adapter signatures, attacked the way the issue did: an adapter biased to always-benign with a
recomputed sha256 and a made-up kappa of 0.990 is refused unsigned, signed with another key,
with its signed report edited, or re-signed under another manifest; a report that did not pass is
never signed; the base's own adapter is trusted only byte for byte as the model folder has it.
Keys round-trip through their PEM files (`adapters.registry.keys`)."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.registry.artifact import ADAPTER_FILE, MANIFEST_FILE, ArtifactError, write_artifact
from adapters.registry.keys import (
    ensure_key_pair,
    make_key_pair,
    read_signing_key,
    read_verify_key,
)
from adapters.registry.signing import (
    SIGNATURE_FILE,
    AdapterSignature,
    AdapterTrust,
    SignatureError,
    SigningError,
    key_id,
    private_key_from_pem,
    public_key_from_pem,
    sign_adapter,
    verify_adapter,
)

TRAINER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ATTACKER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _files(tmp: Path, adapter_id: str = "a1", *, value: float = 0.5) -> dict[str, bytes]:
    artifact = write_artifact(
        tmp / adapter_id,
        adapter_id=adapter_id,
        params={"w": np.full((2, 2), value, dtype=np.float32)},
        base_model_version="m",
        policy_version="v1",
        labels=["benign", "violating"],
        metrics={"kappa": 0.990},  # made up: the manifest is not the gate's word
        now=1.0,
    )
    return artifact.files()


def _gate(adapter_id: str = "a1", passed: bool = True, **more: Any) -> dict[str, Any]:
    return {"adapter_id": adapter_id, "policy_version": "v1", "passed": passed, **more}


def _signed(files: dict[str, bytes], key: Ed25519PrivateKey = TRAINER) -> dict[str, bytes]:
    signature = sign_adapter(files[MANIFEST_FILE], _gate(candidate_kappa=0.81), key)
    return {**files, SIGNATURE_FILE: signature.model_dump_json().encode()}


def test_a_signed_adapter_verifies_with_the_trainers_key(tmp_path: Path) -> None:
    signed = verify_adapter(_signed(_files(tmp_path)), TRAINER.public_key())
    assert signed.adapter_id == "a1"
    assert signed.gate["candidate_kappa"] == 0.81
    assert signed.key_id == key_id(TRAINER.public_key())


def test_the_always_benign_adapter_is_refused_unsigned_and_signed_by_another_key(
    tmp_path: Path,
) -> None:
    forged = _files(tmp_path, "always-benign", value=-9.0)  # sha256 recomputed by write_artifact
    with pytest.raises(SignatureError, match="not signed") as unsigned:
        verify_adapter(forged, TRAINER.public_key())
    assert unsigned.value.reason == "unsigned"
    other = {
        **forged,
        SIGNATURE_FILE: sign_adapter(
            forged[MANIFEST_FILE], _gate("always-benign", candidate_kappa=0.990), ATTACKER
        )
        .model_dump_json()
        .encode(),
    }
    with pytest.raises(SignatureError, match="signed with key") as wrong:
        verify_adapter(other, TRAINER.public_key())
    assert wrong.value.reason == "wrong_key"


def test_an_edited_report_or_a_signature_moved_to_another_manifest_is_refused(
    tmp_path: Path,
) -> None:
    good = _signed(_files(tmp_path))
    doc = json.loads(good[SIGNATURE_FILE])
    doc["gate"]["candidate_kappa"] = 0.990
    with pytest.raises(SignatureError, match="does not verify") as edited:
        verify_adapter({**good, SIGNATURE_FILE: json.dumps(doc).encode()}, TRAINER.public_key())
    assert edited.value.reason == "bad_signature"
    # a genuine signature, stapled to another adapter's manifest
    other = _files(tmp_path, "a2", value=-9.0)
    with pytest.raises(SignatureError, match="another manifest") as moved:
        verify_adapter({**other, SIGNATURE_FILE: good[SIGNATURE_FILE]}, TRAINER.public_key())
    assert moved.value.reason == "bad_signature"
    for garbage in (b"not json", json.dumps({**doc, "signature": "***"}).encode()):
        with pytest.raises(SignatureError, match="malformed"):
            verify_adapter({**good, SIGNATURE_FILE: garbage}, TRAINER.public_key())


def test_a_failed_report_is_never_signed_and_a_failed_signed_report_is_refused(
    tmp_path: Path,
) -> None:
    files = _files(tmp_path)
    with pytest.raises(SigningError, match="did not pass"):
        sign_adapter(files[MANIFEST_FILE], _gate(passed=False), TRAINER)
    with pytest.raises(SigningError, match="about a2 under v1, not a1"):
        sign_adapter(files[MANIFEST_FILE], _gate("a2"), TRAINER)
    # a signature over a failed report can only come from a key that signs anything: refused too
    unsigned = AdapterSignature(
        adapter_id="a1",
        manifest_sha256=hashlib.sha256(files[MANIFEST_FILE]).hexdigest(),
        gate=_gate(passed=False),
        key_id=key_id(TRAINER.public_key()),
        signature="",
    )
    doc = unsigned.model_copy(
        update={"signature": base64.b64encode(TRAINER.sign(unsigned.payload())).decode()}
    )
    with pytest.raises(SignatureError, match="failed") as failed:
        verify_adapter(
            {**files, SIGNATURE_FILE: doc.model_dump_json().encode()}, TRAINER.public_key()
        )
    assert failed.value.reason == "not_gated"


def test_malformed_manifests_are_artifact_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no adapter\.json"):
        verify_adapter({}, TRAINER.public_key())
    with pytest.raises(ArtifactError, match="malformed"):
        verify_adapter({MANIFEST_FILE: b"{}"}, TRAINER.public_key())
    with pytest.raises(ArtifactError, match="malformed"):
        sign_adapter(b"[]", _gate(), TRAINER)


def test_trust_takes_the_bootstrap_byte_for_byte_and_everything_else_signed(
    tmp_path: Path,
) -> None:
    boot = _files(tmp_path, "bootstrap")
    trust = AdapterTrust(TRAINER.public_key(), bootstrap=boot)
    assert trust.check(boot) == "bootstrap"
    assert trust.check(_signed(_files(tmp_path))) == "signed"
    # the bootstrap's id with other bytes is just an unsigned adapter
    fake_boot = _files(tmp_path / "x", "bootstrap", value=-9.0)
    with pytest.raises(SignatureError) as refused:
        trust.check(fake_boot)
    assert refused.value.reason == "unsigned"
    # no verify key: only the bootstrap
    keyless = AdapterTrust(None, bootstrap=boot)
    assert keyless.check(boot) == "bootstrap"
    with pytest.raises(SignatureError) as no_key:
        keyless.check(_signed(_files(tmp_path)))
    assert no_key.value.reason == "no_key"
    assert {ADAPTER_FILE, MANIFEST_FILE} <= set(boot)


def test_key_pairs_round_trip_and_are_never_replaced_silently(tmp_path: Path) -> None:
    private, public = make_key_pair(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = read_signing_key(private)
    assert key_id(read_verify_key(public)) == key_id(key.public_key())
    with pytest.raises(SigningError, match="already holds a key pair"):
        make_key_pair(tmp_path / "keys")
    assert ensure_key_pair(tmp_path / "keys") == (private, public)
    assert key_id(read_verify_key(public)) == key_id(key.public_key())  # kept
    fresh, _ = ensure_key_pair(tmp_path / "other")
    assert key_id(read_signing_key(fresh).public_key()) != key_id(key.public_key())


def test_unreadable_or_wrong_keys_are_one_clear_error(tmp_path: Path) -> None:
    private, public = make_key_pair(tmp_path)
    with pytest.raises(SigningError, match="cannot read the verify key"):
        read_verify_key(tmp_path / "missing.pub")
    with pytest.raises(SigningError, match="not a PEM public key"):
        read_verify_key(private)
    with pytest.raises(SigningError, match="not a PEM private key"):
        read_signing_key(public)
    with pytest.raises(SigningError, match="cannot read the signing key"):
        read_signing_key(tmp_path / "missing.key")
    ec = generate_private_key(SECP256R1())
    ec_private = ec.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ec_public = ec.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SigningError, match="not Ed25519"):
        private_key_from_pem(ec_private)
    with pytest.raises(SigningError, match="not Ed25519"):
        public_key_from_pem(ec_public)
