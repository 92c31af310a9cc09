"""ONNX export of the classifier and the parity check that an export decides as the PyTorch
model does. Export uses the TorchScript exporter (``dynamo=False``, opset 17, eager attention,
dynamic batch and sequence axes); `models.lora_graph` then makes it adapter-ready and int8."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.errors import BorderlineError
from models.network import MeanPoolClassifier

__all__ = ["ExportError", "Parity", "export_onnx", "parity"]

OPSET = 17


class ExportError(BorderlineError):
    """Export or quantisation failed, or the export does not match PyTorch."""


def export_onnx(model: MeanPoolClassifier, out_path: Path, *, seq_len: int = 16) -> Path:
    """Export ``model`` (eval mode, LoRA merged) with outputs ``logits`` and ``embedding``."""
    model.eval()
    model.with_embedding = True
    ids = torch.ones((2, seq_len), dtype=torch.long)
    mask = torch.ones((2, seq_len), dtype=torch.long)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.onnx.export(
            model,
            (ids, mask),
            str(out_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits", "embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    finally:
        model.with_embedding = False
    return out_path


@dataclass(frozen=True)
class Parity:
    items: int
    decision_agreement: float  # share of items whose argmax label is the same
    max_abs_prob_diff: float
    mean_abs_prob_diff: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "items": self.items,
            "decision_agreement": round(self.decision_agreement, 6),
            "max_abs_prob_diff": round(self.max_abs_prob_diff, 6),
            "mean_abs_prob_diff": round(self.mean_abs_prob_diff, 6),
        }


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Compare two (n, labels) probability matrices.

    >>> p = parity(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.8, 0.2], [0.6, 0.4]]))
    >>> p.decision_agreement, round(p.max_abs_prob_diff, 2)
    (0.5, 0.4)
    """
    if reference.shape != candidate.shape or reference.ndim != 2 or reference.shape[0] == 0:
        raise ExportError(f"cannot compare shapes {reference.shape} and {candidate.shape}")
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    diff = np.abs(reference - candidate)
    return Parity(
        items=int(reference.shape[0]),
        decision_agreement=float(same.mean()),
        max_abs_prob_diff=float(diff.max()),
        mean_abs_prob_diff=float(diff.mean()),
    )
