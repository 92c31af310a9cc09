"""Signing adapters by hand in the integration tests, as the trainer does once the gate passed:
workers load only signed adapters (`Stack.adapter_keys` gives each test its key pair)."""

from __future__ import annotations

from adapters.registry.artifact import MANIFEST_FILE, AdapterArtifact
from adapters.registry.keys import read_signing_key
from adapters.registry.signing import sign_adapter
from adapters.registry.store import AdapterRegistry
from streams.wire.settings import Settings

__all__ = ["sign_as_trainer"]


async def sign_as_trainer(
    registry: AdapterRegistry, artifact: AdapterArtifact, settings: Settings
) -> None:
    """Sign a registered adapter with ``settings``' signing key and a passed gate report."""
    assert settings.adapters.signing_key_file is not None
    gate = {
        "adapter_id": artifact.adapter_id,
        "policy_version": artifact.manifest.policy_version,
        "passed": True,
        "reason": "signed by the test as the trainer",
    }
    key = read_signing_key(settings.adapters.signing_key_file)
    await registry.attach_signature(sign_adapter(artifact.files()[MANIFEST_FILE], gate, key))
