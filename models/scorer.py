"""The onnxruntime scorer: a batch of texts in, probabilities (one per label) and pooled embeddings
out. Tokenisation uses the `tokenizers` library (truncation, dynamic padding to the longest item
of the batch); no torch. ``score`` is a plain blocking call: onnxruntime releases the GIL, so the
stream runs it in an executor and heartbeats and commits go on while a batch is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models.errors import BorderlineError
from models.manifest import ModelManifest

__all__ = ["ScoreBatch", "Scorer", "ScorerError", "encode_texts", "load_tokenizer", "softmax"]

TOKENIZER_FILE = "tokenizer.json"


class ScorerError(BorderlineError):
    """The scorer cannot be built from the given model folder."""


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The tokenizer as training, export and scoring all use it: truncation to ``max_length``,
    padding to the longest item of each batch."""
    if not path.is_file():
        raise ScorerError(f"tokenizer not found: {path}")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tokenizer


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask}


@dataclass(frozen=True)
class ScoreBatch:
    probabilities: np.ndarray  # (n, labels) float32, rows sum to 1
    embeddings: np.ndarray  # (n, hidden) float32, L2-normalised
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    def category_probabilities(self, row: int) -> dict[str, float]:
        """Probability per policy category (labels[0], benign, is left out)."""
        return {
            label: round(float(self.probabilities[row, j]), 6)
            for j, label in enumerate(self.labels)
            if j > 0
        }

    def violating(self) -> np.ndarray:
        """Probability that each item violates any category (1 - P(benign))."""
        return np.asarray(1.0 - self.probabilities[:, 0], dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True), dtype=np.float32)


class Scorer:
    """One onnxruntime session and one tokenizer. Thread-safe for concurrent ``score`` calls."""

    def __init__(
        self,
        onnx_path: Path,
        tokenizer_path: Path,
        labels: Sequence[str],
        *,
        max_length: int = 128,
        threads: int = 0,
        model_version: str = "unversioned",
        adapter_version: str = "none",
    ) -> None:
        if not onnx_path.is_file():
            raise ScorerError(f"ONNX model not found: {onnx_path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = load_tokenizer(tokenizer_path, max_length)
        self.labels = tuple(labels)
        self.max_length = max_length
        self.model_version = model_version
        self.adapter_version = adapter_version
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs[:2] != ["logits", "embedding"]:
            raise ScorerError(f"{onnx_path} has outputs {outputs}, expected logits and embedding")

    @classmethod
    def from_dir(
        cls, model_dir: Path, *, max_length: int | None = None, threads: int = 0
    ) -> Scorer:
        """Build from a `model init` folder; the manifest's sha256s are verified first."""
        manifest = ModelManifest.read(model_dir)
        return cls(
            model_dir / manifest.onnx_file,
            model_dir / TOKENIZER_FILE,
            manifest.labels,
            max_length=max_length or manifest.max_length,
            threads=threads,
            model_version=manifest.model_version,
            adapter_version=manifest.adapter_version,
        )

    def score(self, texts: Sequence[str]) -> ScoreBatch:
        if not texts:
            empty = np.zeros((0, len(self.labels)), dtype=np.float32)
            return ScoreBatch(empty, np.zeros((0, 0), dtype=np.float32), self.labels)
        logits, embedding = self.session.run(
            ["logits", "embedding"], encode_texts(self.tokenizer, texts)
        )
        return ScoreBatch(softmax(logits), np.asarray(embedding, np.float32), self.labels)
