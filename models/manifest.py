"""The manifest that travels with every model folder: what it is (versions, labels, the base it was
built on), how it was made (training-data hash, seed) and how good it was (held-out figures), with
the sha256 of every file. Loading verifies the hashes: a changed file is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.base import sha256_file
from models.errors import BorderlineError

__all__ = ["MANIFEST_NAME", "ManifestError", "ModelManifest"]

MANIFEST_NAME = "manifest.json"


class ManifestError(BorderlineError):
    """A model folder whose manifest is missing, malformed, or does not match its files."""


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = 1
    model_version: str
    adapter_version: str
    base_model: str
    base_revision: str
    labels: list[str] = Field(min_length=2, description="output order; labels[0] is benign")
    policy_version: str
    max_length: int
    onnx_file: str
    files: dict[str, str] = Field(description="relative path -> sha256")
    adapter_layout: dict[str, bool] = Field(
        default_factory=dict, description="overridable adapter tensors -> stored transposed"
    )
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    created_at: float

    @property
    def categories(self) -> list[str]:
        return self.labels[1:]

    def write(self, model_dir: Path) -> Path:
        path = model_dir / MANIFEST_NAME
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @staticmethod
    def hash_files(model_dir: Path, names: list[str]) -> dict[str, str]:
        return {name: sha256_file(model_dir / name) for name in sorted(names)}

    @classmethod
    def read(cls, model_dir: Path, verify: bool = True) -> ModelManifest:
        path = model_dir / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                f"no {MANIFEST_NAME} in {model_dir}: run `borderline model init` first"
            )
        try:
            manifest = cls.model_validate(json.loads(path.read_text()))
        except (ValueError, ValidationError) as exc:
            raise ManifestError(f"{path} is not a valid manifest: {exc}") from exc
        if verify:
            manifest.verify(model_dir)
        return manifest

    def verify(self, model_dir: Path) -> None:
        if self.onnx_file not in self.files:
            raise ManifestError(f"{self.onnx_file} is not listed in the manifest's files")
        for name, expected in self.files.items():
            file = model_dir / name
            if not file.is_file():
                raise ManifestError(f"{file} is listed in the manifest but missing")
            actual = sha256_file(file)
            if actual != expected:
                raise ManifestError(
                    f"{file} has sha256 {actual[:12]}..., the manifest says {expected[:12]}...: "
                    "the file was changed or corrupted"
                )
