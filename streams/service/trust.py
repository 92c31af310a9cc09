"""Adapter signatures where the processes run (README: Security): what a worker trusts (the
trainer's public key, and the base's own adapter as its model folder has it), and the trainer's
signing of every adapter that passed the gate, hooked in where its gate report is recorded (after
the gate, before any promotion). The signing and verifying themselves are
`adapters.registry.signing`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.adapt.verdicts import GateRecord
from adapters.registry.artifact import ADAPTER_FILE, BOOTSTRAP_ARTIFACT, MANIFEST_FILE
from adapters.registry.keys import read_signing_key, read_verify_key
from adapters.registry.signing import AdapterSignature, AdapterTrust, sign_adapter
from streams.wire.settings import Settings

__all__ = [
    "SigningVerdicts",
    "adapter_trust",
    "signing_key",
    "signing_verdicts",
    "trainer_trust",
]

log = logging.getLogger(__name__)


def _bootstrap_files(model_dir: Path) -> dict[str, bytes]:
    folder = model_dir / BOOTSTRAP_ARTIFACT
    return {
        name: (folder / name).read_bytes()
        for name in (MANIFEST_FILE, ADAPTER_FILE)
        if (folder / name).is_file()
    }


def adapter_trust(settings: Settings) -> AdapterTrust:
    """What this worker loads: adapters signed by the trainer's key
    (``BORDERLINE_ADAPTERS__VERIFY_KEY_FILE``; unset: none) and its own bootstrap adapter. An
    unreadable key file is a `SigningError` (one line, exit 2)."""
    path = settings.adapters.verify_key_file
    if path is None:
        log.warning(
            "no BORDERLINE_ADAPTERS__VERIFY_KEY_FILE: this worker serves its base's own adapter "
            "and refuses every other"
        )
    key = None if path is None else read_verify_key(path)
    return AdapterTrust(key, _bootstrap_files(settings.model.dir))


def signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """The trainer's key (``BORDERLINE_ADAPTERS__SIGNING_KEY_FILE``); None, with a warning, when
    unset: its adapters are then refused by every worker."""
    path = settings.adapters.signing_key_file
    if path is None:
        log.warning(
            "no BORDERLINE_ADAPTERS__SIGNING_KEY_FILE: adapters this trainer promotes are "
            "unsigned, and workers refuse them"
        )
        return None
    return read_signing_key(path)


def trainer_trust(settings: Settings, key: Ed25519PrivateKey | None) -> AdapterTrust | None:
    """Where the trainer's own rollbacks may go: adapters that verify with the workers' key (the
    configured verify key, else the public half of its signing key); None without either."""
    if settings.adapters.verify_key_file is not None:
        return adapter_trust(settings)
    if key is None:
        return None
    return AdapterTrust(key.public_key(), _bootstrap_files(settings.model.dir))


class GateReports(Protocol):
    """`adapters.adapt.verdicts.VerdictStore`, as the trainer uses it."""

    async def record(self, report: GateRecord) -> None: ...
    async def drift_flags(self) -> set[str]: ...
    async def clear_flags(self) -> None: ...


class Signatures(Protocol):
    """`adapters.registry.store.AdapterRegistry`."""

    async def files(self, adapter_id: str) -> dict[str, bytes]: ...

    async def attach_signature(self, signature: AdapterSignature) -> None: ...


class SigningVerdicts:
    """The trainer's verdict store, signing every adapter whose gate report passed, with that
    report, before the report is recorded (so before any promotion). Everything else is the
    wrapped store's."""

    def __init__(self, store: GateReports, registry: Signatures, key: Ed25519PrivateKey) -> None:
        self.store = store
        self.registry = registry
        self.key = key

    async def record(self, report: GateRecord) -> None:
        if report.passed:
            files = await self.registry.files(report.adapter_id)
            gate = report.model_dump(mode="json")
            await self.registry.attach_signature(sign_adapter(files[MANIFEST_FILE], gate, self.key))
            log.info("adapter %s signed with its gate report", report.adapter_id)
        await self.store.record(report)

    async def drift_flags(self) -> set[str]:
        return await self.store.drift_flags()

    async def clear_flags(self) -> None:
        await self.store.clear_flags()


def signing_verdicts(
    store: GateReports, registry: Signatures, key: Ed25519PrivateKey | None
) -> GateReports:
    """``store`` as the trainer uses it: signing when it has a key, as it is otherwise."""
    return store if key is None else SigningVerdicts(store, registry, key)
