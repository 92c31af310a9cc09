"""The classifier network: the base encoder, mean pooling (how all-MiniLM-L6-v2 was trained to
embed), and a linear head with one logit for "benign" and one per policy category. Imported only
where training and export happen: it needs torch."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel

from models.base import BaseModelRef

__all__ = ["MeanPoolClassifier", "mean_pool"]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    count = mask.sum(dim=1).clamp(min=1.0)
    return summed / count


class MeanPoolClassifier(nn.Module):
    """encoder -> mean pool -> dropout -> classifier. ``forward`` returns logits; with
    ``with_embedding=True`` it also returns the L2-normalised pooled embedding (for curation)."""

    def __init__(self, encoder: nn.Module, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        self.with_embedding = False

    @classmethod
    def from_base(cls, base: BaseModelRef, num_labels: int, seed: int) -> MeanPoolClassifier:
        torch.manual_seed(seed)
        encoder = AutoModel.from_pretrained(
            str(base.path), attn_implementation="eager", local_files_only=True
        )
        model = cls(encoder, int(encoder.config.hidden_size), num_labels)
        nn.init.normal_(model.classifier.weight, std=0.02)
        nn.init.zeros_(model.classifier.bias)
        return model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        logits: torch.Tensor = self.classifier(self.dropout(pooled))
        if self.with_embedding:
            return logits, nn.functional.normalize(pooled, dim=-1)
        return logits
