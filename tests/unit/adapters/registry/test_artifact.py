"""Unit tests for adapters.artifact and models.adapter_file: an adapter is used only when its file
still has the sha256 its manifest records and it was built for the running base; a missing,
changed or malformed part is an ArtifactError that names it. Adapter files round-trip their
tensors exactly, and `check_fits` refuses any tensor the base cannot take."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from adapters.registry.artifact import (
    ADAPTER_FILE,
    AdapterArtifact,
    AdapterManifest,
    ArtifactError,
    write_artifact,
)
from models.adapter_file import AdapterFileError, check_fits, read_adapter_file
from models.errors import BorderlineError

MANIFEST_FILE = "adapter.json"
BASE = "m-test"


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "layer.0.lora_A": rng.standard_normal((4, 2)).astype(np.float32),
        "layer.0.lora_B": rng.standard_normal((2, 4)).astype(np.float32),
        "classifier.bias": np.array([0.25, -0.25], dtype=np.float32),
    }


def _artifact(directory: Path, adapter_id: str = "a-1") -> AdapterArtifact:
    return write_artifact(
        directory,
        adapter_id=adapter_id,
        params=_params(),
        base_model_version=BASE,
        policy_version="v1",
        labels=["benign", "violating"],
        parent_id="bootstrap",
        training={"data_sha256": "ab" * 32, "seed": 7},
        metrics={"kappa": 0.8},
        now=1_700_000_000.0,
    )


def test_written_artifact_loads_and_records_the_sha256_of_its_file(tmp_path: Path) -> None:
    written = _artifact(tmp_path / "a")
    loaded = AdapterArtifact.load(tmp_path / "a", expected_base=BASE)
    digest = hashlib.sha256((tmp_path / "a" / ADAPTER_FILE).read_bytes()).hexdigest()
    assert loaded.manifest.files == {ADAPTER_FILE: digest}
    assert loaded.manifest == written.manifest
    assert loaded.adapter_id == "a-1"
    assert loaded.path == tmp_path / "a" / ADAPTER_FILE
    assert loaded.manifest.base_model_version == BASE
    assert loaded.manifest.parent_id == "bootstrap"
    assert loaded.manifest.training["seed"] == 7
    assert loaded.manifest.created_at == 1_700_000_000.0


def test_one_changed_byte_of_the_adapter_file_is_refused(tmp_path: Path) -> None:
    _artifact(tmp_path / "a")
    path = tmp_path / "a" / ADAPTER_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256") as caught:
        AdapterArtifact.load(tmp_path / "a", expected_base=BASE)
    assert ADAPTER_FILE in str(caught.value)
    assert "a-1" in str(caught.value)
    assert isinstance(caught.value, BorderlineError)


def test_an_adapter_for_another_base_is_refused_naming_both(tmp_path: Path) -> None:
    _artifact(tmp_path / "a")
    with pytest.raises(ArtifactError) as caught:
        AdapterArtifact.load(tmp_path / "a", expected_base="m-other")
    assert BASE in str(caught.value)
    assert "m-other" in str(caught.value)


def test_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    _artifact(tmp_path / "a")
    (tmp_path / "a" / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match=MANIFEST_FILE):
        AdapterArtifact.load(tmp_path / "a", expected_base=BASE)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"adapter_id": "a-1"}',
        "",
    ],
    ids=["not-json", "not-an-object", "missing-fields", "empty"],
)
def test_a_malformed_manifest_is_refused(tmp_path: Path, text: str) -> None:
    _artifact(tmp_path / "a")
    (tmp_path / "a" / MANIFEST_FILE).write_text(text)
    with pytest.raises(ArtifactError, match="malformed"):
        AdapterArtifact.load(tmp_path / "a", expected_base=BASE)


def test_a_manifest_with_an_unknown_field_is_refused(tmp_path: Path) -> None:
    _artifact(tmp_path / "a")
    doc = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text())
    doc["pickle"] = "please"
    (tmp_path / "a" / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="malformed"):
        AdapterArtifact.load(tmp_path / "a", expected_base=BASE)


def test_a_missing_adapter_file_is_refused(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path / "a")
    files = artifact.files()
    del files[ADAPTER_FILE]
    with pytest.raises(ArtifactError, match=f"{ADAPTER_FILE} is missing"):
        AdapterArtifact.from_files(files, tmp_path / "b", expected_base=BASE)
    assert not (tmp_path / "b").exists(), "a refused adapter must not be placed"
    (tmp_path / "a" / ADAPTER_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"{ADAPTER_FILE} is missing"):
        AdapterArtifact.load(tmp_path / "a", expected_base=BASE)


def test_a_refused_adapter_is_not_placed_in_the_target(tmp_path: Path) -> None:
    files = _artifact(tmp_path / "a").files()
    files[ADAPTER_FILE] = files[ADAPTER_FILE][:-1] + bytes([files[ADAPTER_FILE][-1] ^ 1])
    with pytest.raises(ArtifactError, match="sha256"):
        AdapterArtifact.from_files(files, tmp_path / "b", expected_base=BASE)
    with pytest.raises(ArtifactError, match="m-other"):
        AdapterArtifact.from_files(
            _artifact(tmp_path / "c").files(), tmp_path / "b", expected_base="m-other"
        )
    assert not (tmp_path / "b").exists()


def test_files_round_trip_into_another_directory(tmp_path: Path) -> None:
    original = _artifact(tmp_path / "a")
    copy = AdapterArtifact.from_files(original.files(), tmp_path / "b", expected_base=BASE)
    assert copy.directory == tmp_path / "b"
    assert copy.manifest == original.manifest
    assert copy.files() == original.files()
    assert copy.path.read_bytes() == original.path.read_bytes()
    # the copy is itself a valid artifact on disk
    again = AdapterArtifact.load(tmp_path / "b", expected_base=BASE)
    assert again.manifest == original.manifest
    # placing the same files twice is harmless
    AdapterArtifact.from_files(original.files(), tmp_path / "b", expected_base=BASE)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [MANIFEST_FILE, ADAPTER_FILE]


def test_manifest_rejects_an_empty_id() -> None:
    with pytest.raises(ValueError):
        AdapterManifest(
            adapter_id="",
            base_model_version=BASE,
            policy_version="v1",
            labels=["benign", "violating"],
            files={},
            created_at=0.0,
        )


def test_adapter_file_returns_the_arrays_written(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path / "a")
    read = read_adapter_file(artifact.path)
    expected = _params()
    assert sorted(read) == sorted(expected)
    for name, array in expected.items():
        assert read[name].dtype == np.float32
        np.testing.assert_array_equal(read[name], array)


def test_float64_params_are_written_as_float32(tmp_path: Path) -> None:
    artifact = write_artifact(
        tmp_path / "a",
        adapter_id="a-64",
        params={"w": np.arange(6, dtype=np.float64).reshape(2, 3)},
        base_model_version=BASE,
        policy_version="v1",
        labels=["benign", "violating"],
    )
    read = read_adapter_file(artifact.path)
    assert read["w"].dtype == np.float32
    np.testing.assert_array_equal(read["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_a_file_that_is_not_an_adapter_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / ADAPTER_FILE
    path.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(AdapterFileError, match="not a readable adapter file"):
        read_adapter_file(path)


EXPECTED = {"a": (2, 3), "b": (3,)}


def _fitting() -> dict[str, np.ndarray]:
    return {"a": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def test_check_fits_accepts_matching_tensors() -> None:
    check_fits(_fitting(), EXPECTED)


def test_check_fits_refuses_an_unknown_name() -> None:
    params = {**_fitting(), "extra": np.zeros(1, np.float32)}
    with pytest.raises(AdapterFileError, match="unknown tensors \\['extra'\\]"):
        check_fits(params, EXPECTED)


def test_check_fits_refuses_a_missing_name() -> None:
    params = _fitting()
    del params["b"]
    with pytest.raises(AdapterFileError, match="missing \\['b'\\]"):
        check_fits(params, EXPECTED)


def test_check_fits_refuses_a_wrong_shape() -> None:
    params = {**_fitting(), "a": np.zeros((3, 2), np.float32)}
    with pytest.raises(AdapterFileError, match=r"a has shape \(3, 2\), the base expects \(2, 3\)"):
        check_fits(params, EXPECTED)


def test_check_fits_refuses_float64() -> None:
    params = {**_fitting(), "b": np.zeros(3, np.float64)}
    with pytest.raises(AdapterFileError, match="b is float64, expected float32"):
        check_fits(params, EXPECTED)


@pytest.mark.parametrize("bad_id", ["../../escaped", "a/b", "a:b", ".hidden", ""])
def test_an_id_that_is_not_a_plain_name_is_refused(bad_id: str) -> None:
    with pytest.raises(ValueError):
        AdapterManifest(
            adapter_id=bad_id,
            base_model_version=BASE,
            policy_version="v1",
            labels=["benign", "violating"],
            files={ADAPTER_FILE: "0" * 64},
            created_at=0.0,
        )


def test_a_manifest_that_does_not_list_the_adapter_file_is_refused(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path / "a")
    doc = json.loads((artifact.directory / MANIFEST_FILE).read_text())
    doc["files"] = {}
    files = {MANIFEST_FILE: json.dumps(doc).encode(), ADAPTER_FILE: b"garbage"}
    with pytest.raises(ArtifactError, match="does not list"):
        AdapterArtifact.from_files(files, tmp_path / "target", expected_base=BASE)
    assert not (tmp_path / "target" / ADAPTER_FILE).exists()
