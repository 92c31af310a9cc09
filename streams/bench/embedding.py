"""Embeddings for the label-efficiency benchmark: mean-pooled, L2-normalised base-encoder vectors,
cached on disk by corpus hash."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EmbeddingCache", "embed_texts"]


EMBED_MAX_LENGTH = 128


_EMBED_BATCH = 32


_CACHE_VERSION = "mean-pool-l2-v1"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def embed_texts(texts: Sequence[str], max_length: int, *, progress: bool = True) -> np.ndarray:
    """Mean-pooled, L2-normalised base-encoder embeddings (n, 384) as float32, no gradient.

    Texts are batched in order of length, so short ones are not padded to long ones; the rows
    come back in input order."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel

    from models.base import base_model
    from models.network import mean_pool
    from models.scorer import TOKENIZER_FILE, encode_texts, load_tokenizer

    base = base_model()
    tokenizer = load_tokenizer(base.path / TOKENIZER_FILE, max_length)
    encoder = AutoModel.from_pretrained(str(base.path), local_files_only=True).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), int(encoder.config.hidden_size)), dtype=np.float32)
    with (
        torch.inference_mode(),
        tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress) as bar,
    ):
        for start in range(0, len(texts), _EMBED_BATCH):
            rows = order[start : start + _EMBED_BATCH]
            enc = encode_texts(tokenizer, [texts[i] for i in rows])
            mask = torch.from_numpy(enc["attention_mask"])
            hidden = encoder(
                input_ids=torch.from_numpy(enc["input_ids"]), attention_mask=mask
            ).last_hidden_state
            pooled = torch.nn.functional.normalize(mean_pool(hidden, mask), dim=-1)
            out[rows] = pooled.numpy()
            bar.update(len(rows))
    return out


@dataclass(frozen=True)
class EmbeddingCache:
    """Where the embeddings of one data file live: keyed by the file's sha256, the base encoder's
    revision, the max length and the pooling, so a change in any of them misses the cache."""

    folder: Path

    def path_for(self, data_sha256: str, base_revision: str, max_length: int) -> Path:
        key = hashlib.sha256(
            f"{data_sha256}|{base_revision}|{max_length}|{_CACHE_VERSION}".encode()
        ).hexdigest()[:20]
        return self.folder / f"embeddings-{data_sha256[:12]}-ml{max_length}-{key}.npy"

    def load_or_compute(
        self, data_path: Path, texts: Sequence[str], max_length: int, *, progress: bool
    ) -> tuple[np.ndarray, dict[str, Any]]:
        from models.base import base_model

        data_sha = _file_sha256(data_path)
        path = self.path_for(data_sha, base_model().revision, max_length)
        info: dict[str, Any] = {
            "file": str(path),
            "data_sha256": data_sha,
            "base_revision": base_model().revision,
            "max_length": max_length,
            "pooling": "mean over tokens, L2-normalised",
        }
        if path.is_file():
            cached = np.load(path)
            if cached.shape[0] == len(texts):
                info.update(cache="hit", seconds=0.0)
                return cached, info
        started = time.perf_counter()
        vectors = embed_texts(texts, max_length, progress=progress)
        info.update(cache="miss (computed and stored)", seconds=time.perf_counter() - started)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
        return vectors, info
