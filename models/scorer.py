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

from models.adapter_file import check_fits, read_adapter_file
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
    adapter_id: str = "none"  # the adapter that produced these scores

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


@dataclass(frozen=True)
class _Loaded:
    adapter_id: str
    run_options: ort.RunOptions | None
    adapter: ort.LoraAdapter | None  # kept alive as long as its run options are used


class Scorer:
    """One onnxruntime session and one tokenizer, and any number of loaded LoRA adapters of which
    one is active. Thread-safe: ``score`` reads the active adapter once per batch, and
    ``activate`` replaces that reference atomically, so a swap happens between batches; the
    previously active adapter stays loaded, so going back is instant."""

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
        options.log_severity_level = 3  # overridable initializers are intended: no warning each
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = load_tokenizer(tokenizer_path, max_length)
        self.labels = tuple(labels)
        self.max_length = max_length
        self.model_version = model_version
        self.overridable = {
            i.name: tuple(int(d) for d in i.shape)
            for i in self.session.get_overridable_initializers()
        }
        # the base's own initializer values are the adapter it was exported with
        self._adapters: dict[str, _Loaded] = {adapter_version: _Loaded(adapter_version, None, None)}
        self._active = self._adapters[adapter_version]
        self.base_adapter = adapter_version
        outputs = [o.name for o in self.session.get_outputs()]
        dim = self.session.get_outputs()[1].shape[-1]
        self.embedding_dim = int(dim) if isinstance(dim, int) else 384
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

    @property
    def adapter_version(self) -> str:
        return self._active.adapter_id

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    def load_adapter(self, adapter_id: str, path: Path) -> None:
        """Load (memory-map) an adapter file after checking it fits this base."""
        if adapter_id in self._adapters:
            return
        check_fits(read_adapter_file(path), self.overridable)
        adapter = ort.LoraAdapter()
        adapter.Load(str(path))
        options = ort.RunOptions()
        options.add_active_adapter(adapter)
        self._adapters[adapter_id] = _Loaded(adapter_id, options, adapter)

    def activate(self, adapter_id: str) -> None:
        try:
            self._active = self._adapters[adapter_id]
        except KeyError:
            raise ScorerError(f"adapter {adapter_id!r} is not loaded") from None

    def unload(self, adapter_id: str) -> None:
        if adapter_id in (self._active.adapter_id, self.base_adapter):
            raise ScorerError(f"adapter {adapter_id!r} is active or the base's own: not unloaded")
        self._adapters.pop(adapter_id, None)

    def score(self, texts: Sequence[str], adapter_id: str | None = None) -> ScoreBatch:
        """Score with the active adapter, or with ``adapter_id`` (shadow scoring)."""
        loaded = self._active if adapter_id is None else self._adapters.get(adapter_id)
        if loaded is None:
            raise ScorerError(f"adapter {adapter_id!r} is not loaded")
        if not texts:
            empty = np.zeros((0, len(self.labels)), dtype=np.float32)
            none = np.zeros((0, 0), dtype=np.float32)
            return ScoreBatch(empty, none, self.labels, loaded.adapter_id)
        logits, embedding = self.session.run(
            ["logits", "embedding"], encode_texts(self.tokenizer, texts), loaded.run_options
        )
        return ScoreBatch(
            softmax(logits), np.asarray(embedding, np.float32), self.labels, loaded.adapter_id
        )
