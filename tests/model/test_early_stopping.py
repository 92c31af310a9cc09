"""Early stopping with the real encoder: the adapter kept is the best epoch's on the held-out
slice, not the last epoch's (issue 11, item 6: more labels must not hurt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.adapt.training import (
    TrainConfig,
    balanced_loss,
    build_lora_model,
    train,
    validation_split,
)
from adapters.labels.dataset import read_jsonl
from models.base import base_model
from models.scorer import TOKENIZER_FILE, load_tokenizer

pytestmark = pytest.mark.model

EXCERPT = Path(__file__).resolve().parent.parent / "data" / "spamassassin_excerpt.jsonl"


def test_the_best_epoch_on_the_held_out_slice_is_kept() -> None:
    items = read_jsonl(EXCERPT)
    texts, y = [i.text for i in items], np.array([i.label for i in items])
    assert min(np.bincount(y)) >= 12
    # a high learning rate over many passes: the validation loss does not fall every epoch
    config = TrainConfig(
        epochs=6,
        batch_size=8,
        learning_rate=2e-2,
        max_length=32,
        seed=1,
        validation_share=0.25,
        patience=6,
    )
    base = base_model()
    tokenizer = load_tokenizer(base.path / TOKENIZER_FILE, config.max_length)
    model = build_lora_model(base, 2, config)
    report = train(model, tokenizer, texts, y.tolist(), config, progress=False)
    split = validation_split(y, 0.25, config.seed)
    assert split is not None
    val = split[1]
    assert report.validation_examples == val.size
    assert report.examples == y.size - val.size
    losses = report.validation_losses
    assert len(losses) == 6
    assert report.best_epoch == int(np.argmin(losses)) + 1
    kept = balanced_loss(model, tokenizer, [texts[i] for i in val], y[val], torch.device("cpu"))
    assert kept == pytest.approx(min(losses), rel=1e-4)
