"""Unit tests for models.manifest: a model folder is loaded only when every file still has the
sha256 its manifest records; a missing, changed or malformed part is a ManifestError that names
it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from models.errors import BorderlineError
from models.manifest import MANIFEST_NAME, ManifestError, ModelManifest

FILES = {"model.onnx": b"\x08\x01onnx-bytes" * 50, "tokenizer.json": b'{"version": "1.0"}'}


def _model_dir(tmp_path: Path) -> tuple[Path, ModelManifest]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name, data in FILES.items():
        (model_dir / name).write_bytes(data)
    manifest = ModelManifest(
        model_version="m-1",
        adapter_version="a-1",
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        base_revision="test@0000",
        labels=["benign", "violating"],
        policy_version="v1",
        max_length=128,
        onnx_file="model.onnx",
        files=ModelManifest.hash_files(model_dir, list(FILES)),
        training={"seed": 7},
        evaluation={"kappa_int8": 0.8},
        created_at=1_700_000_000.0,
    )
    manifest.write(model_dir)
    return model_dir, manifest


def test_hash_files_are_sha256_of_the_contents(tmp_path: Path) -> None:
    _, manifest = _model_dir(tmp_path)
    assert manifest.files == {n: hashlib.sha256(d).hexdigest() for n, d in FILES.items()}


def test_write_then_read_with_verification(tmp_path: Path) -> None:
    model_dir, manifest = _model_dir(tmp_path)
    assert (model_dir / MANIFEST_NAME).is_file()
    loaded = ModelManifest.read(model_dir, verify=True)
    assert loaded == manifest
    assert loaded.categories == ["violating"]


def test_a_changed_byte_is_refused_naming_the_file(tmp_path: Path) -> None:
    model_dir, _ = _model_dir(tmp_path)
    path = model_dir / "model.onnx"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model\.onnx") as info:
        ModelManifest.read(model_dir)
    assert "tokenizer.json" not in str(info.value)
    # without verification it still loads (e.g. to show what the manifest claims)
    assert ModelManifest.read(model_dir, verify=False).model_version == "m-1"


def test_a_missing_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    model_dir, _ = _model_dir(tmp_path)
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ManifestError, match=r"tokenizer\.json.*missing"):
        ModelManifest.read(model_dir)


def test_onnx_file_must_be_listed(tmp_path: Path) -> None:
    model_dir, manifest = _model_dir(tmp_path)
    manifest.model_copy(update={"onnx_file": "other.onnx"}).write(model_dir)
    with pytest.raises(ManifestError, match=r"other\.onnx"):
        ModelManifest.read(model_dir)


def test_missing_manifest_says_to_run_model_init(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="borderline model init"):
        ModelManifest.read(tmp_path)


@pytest.mark.parametrize(
    "text",
    ["{not json", "[]", '{"model_version": "m-1"}', ""],
    ids=["syntax", "list", "missing-fields", "empty"],
)
def test_malformed_manifest_is_a_manifest_error(tmp_path: Path, text: str) -> None:
    model_dir, _ = _model_dir(tmp_path)
    (model_dir / MANIFEST_NAME).write_text(text)
    with pytest.raises(ManifestError, match=re.escape(MANIFEST_NAME)):
        ModelManifest.read(model_dir)


def test_unknown_manifest_field_is_refused(tmp_path: Path) -> None:
    model_dir, _ = _model_dir(tmp_path)
    path = model_dir / MANIFEST_NAME
    doc = json.loads(path.read_text())
    doc["surprise"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="surprise"):
        ModelManifest.read(model_dir)


def test_manifest_error_is_a_borderline_error() -> None:
    assert issubclass(ManifestError, BorderlineError)
