"""The adapter artifact: an onnxruntime adapter file plus a manifest (id, parent, the base it
fits, policy version, training-data hash, seed, metrics, sha256 of every file). Loading verifies
the hashes and that the base matches the running one; anything else is refused with a clear
error. No pickle: the adapter is an ONNX-runtime flatbuffer, the manifest JSON."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.adapter_file import write_adapter_file
from models.errors import BorderlineError

__all__ = [
    "ADAPTER_FILE",
    "BOOTSTRAP_ARTIFACT",
    "AdapterArtifact",
    "AdapterManifest",
    "ArtifactError",
    "verify_files",
    "write_artifact",
]

ADAPTER_FILE = "adapter.onnx_adapter"
BOOTSTRAP_ARTIFACT = "bootstrap-adapter"  # the base's own adapter, inside a model folder
MANIFEST_FILE = "adapter.json"


class ArtifactError(BorderlineError):
    """An adapter that is corrupted, malformed, or made for another base."""


class AdapterManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = 1
    # a folder name and part of Redis keys: no path separators, no colons
    adapter_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    parent_id: str | None = None
    base_model_version: str = Field(description="model_version of the base it was built for")
    policy_version: str
    labels: list[str]
    training: dict[str, Any] = Field(default_factory=dict)  # data_sha256, seed, examples, ...
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str]
    created_at: float
    created_by: str = "borderline"


class AdapterArtifact:
    """A verified adapter on disk: its manifest and the path of its adapter file."""

    def __init__(self, manifest: AdapterManifest, directory: Path) -> None:
        self.manifest = manifest
        self.directory = directory

    @property
    def adapter_id(self) -> str:
        return self.manifest.adapter_id

    @property
    def path(self) -> Path:
        return self.directory / ADAPTER_FILE

    def files(self) -> dict[str, bytes]:
        """The bytes that travel (to the registry): manifest and adapter file."""
        return {
            MANIFEST_FILE: (self.directory / MANIFEST_FILE).read_bytes(),
            ADAPTER_FILE: self.path.read_bytes(),
        }

    @classmethod
    def load(cls, directory: Path, *, expected_base: str) -> AdapterArtifact:
        return cls.from_files(
            {
                name: (directory / name).read_bytes()
                for name in (MANIFEST_FILE, ADAPTER_FILE)
                if (directory / name).is_file()
            },
            directory,
            expected_base=expected_base,
        )

    @classmethod
    def from_files(
        cls, files: Mapping[str, bytes], directory: Path, *, expected_base: str
    ) -> AdapterArtifact:
        """Verify ``files`` (manifest + adapter bytes) and place them in ``directory``."""
        manifest = verify_files(files, expected_base=expected_base, where=f" in {directory}")
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            target = directory / name
            if not target.is_file() or target.read_bytes() != data:
                partial = target.with_suffix(target.suffix + ".tmp")
                partial.write_bytes(data)
                partial.replace(target)
        return cls(manifest, directory)


def verify_files(
    files: Mapping[str, bytes], *, expected_base: str, where: str = ""
) -> AdapterManifest:
    """The manifest of ``files`` once every file it lists has its sha256 and it was built for
    ``expected_base``; `ArtifactError` naming what is wrong otherwise.

    >>> verify_files({}, expected_base="b")
    Traceback (most recent call last):
    ...
    adapters.registry.artifact.ArtifactError: adapter has no adapter.json
    """
    if MANIFEST_FILE not in files:
        raise ArtifactError(f"adapter{where} has no {MANIFEST_FILE}")
    try:
        manifest = AdapterManifest.model_validate(json.loads(files[MANIFEST_FILE]))
    except (ValueError, ValidationError) as exc:
        raise ArtifactError(f"adapter manifest{where} is malformed: {exc}") from exc
    if ADAPTER_FILE not in manifest.files:
        raise ArtifactError(
            f"adapter {manifest.adapter_id}: the manifest does not list {ADAPTER_FILE}'s sha256"
        )
    for name, expected in manifest.files.items():
        data = files.get(name)
        if data is None:
            raise ArtifactError(f"adapter {manifest.adapter_id}: file {name} is missing")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ArtifactError(
                f"adapter {manifest.adapter_id}: {name} has sha256 {actual[:12]}..., the "
                f"manifest says {expected[:12]}...: corrupted or tampered with"
            )
    if manifest.base_model_version != expected_base:
        raise ArtifactError(
            f"adapter {manifest.adapter_id} was built for base {manifest.base_model_version}, "
            f"this worker runs {expected_base}"
        )
    return manifest


def write_artifact(
    directory: Path,
    *,
    adapter_id: str,
    params: Mapping[str, np.ndarray],
    base_model_version: str,
    policy_version: str,
    labels: list[str],
    parent_id: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    created_by: str = "borderline",
    now: float | None = None,
) -> AdapterArtifact:
    """Write an adapter file (``params`` in graph layout) and its manifest into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_adapter_file(directory / ADAPTER_FILE, params)
    digest = hashlib.sha256((directory / ADAPTER_FILE).read_bytes()).hexdigest()
    manifest = AdapterManifest(
        adapter_id=adapter_id,
        parent_id=parent_id,
        base_model_version=base_model_version,
        policy_version=policy_version,
        labels=labels,
        training=training or {},
        metrics=metrics or {},
        files={ADAPTER_FILE: digest},
        created_at=time.time() if now is None else now,
        created_by=created_by,
    )
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return AdapterArtifact(manifest, directory)
