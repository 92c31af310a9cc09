"""LoRA training with peft: low-rank updates on the encoder's attention query/value projections
plus a fully trained classifier head, on a few hundred expert labels. Deterministic for a seed;
shows a progress bar. Needs the ``[train]`` extra (torch, transformers, peft)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from models.base import BaseModelRef
from models.errors import BorderlineError
from models.network import MeanPoolClassifier
from models.scorer import encode_texts, softmax

__all__ = [
    "TrainConfig",
    "TrainReport",
    "TrainingError",
    "adapter_tensors",
    "balanced_loss",
    "build_lora_model",
    "class_balance",
    "predict",
    "recipe_steps",
    "set_adapter_tensors",
    "stable_name",
    "train",
    "training_device",
    "validation_split",
]


RESAMPLE_BELOW = 0.1
"""With class balancing on, a class holding less than this share of the examples is balanced by
drawing balanced batches (with replacement) rather than by loss weights."""


class TrainingError(BorderlineError):
    """Training cannot start (no data, one class only, bad configuration)."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")
    max_length: int = 128
    seed: int = 0
    balance_classes: bool = True
    steps: int | None = None
    """Optimiser steps in all (the last pass may stop part way); None: ``epochs`` full passes."""
    validation_share: float = 0.0
    """Share of the labels held out (per class) to pick the best epoch by balanced validation
    loss and stop after `patience` epochs without improvement; 0 trains every epoch on all."""
    patience: int = 2
    device: str = "auto"  # "auto": CUDA when present, else CPU; or "cpu", "cuda", "cuda:1"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


@dataclass(frozen=True)
class TrainReport:
    steps: int
    examples: int
    final_loss: float
    seconds: float
    trainable_params: int
    device: str = "cpu"
    best_epoch: int | None = None  # with early stopping: the epoch whose tensors were kept
    validation_examples: int = 0
    validation_losses: tuple[float, ...] = ()  # balanced validation loss after each epoch


def build_lora_model(base: BaseModelRef, num_labels: int, config: TrainConfig) -> PeftModel:
    """The base encoder with fresh LoRA matrices and a fresh head; only those are trainable."""
    network = MeanPoolClassifier.from_base(base, num_labels, seed=config.seed)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        modules_to_save=["classifier"],
        bias="none",
    )
    return get_peft_model(network, lora)


def stable_name(param_name: str) -> str:
    """peft's parameter name -> the adapter tensor's stable name
    (``encoder.encoder.layer.0.attention.self.query.lora_A``, ``classifier.weight``)."""
    return (
        param_name.removeprefix("base_model.model.")
        .replace(".modules_to_save.default", "")
        .replace(".default.weight", "")
    )


def adapter_tensors(model: PeftModel) -> dict[str, np.ndarray]:
    """The adapter's own tensors (every LoRA matrix and the head) under stable names, as peft
    holds them."""
    return {
        stable_name(name): param.detach().cpu().numpy().astype(np.float32, copy=True)
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def set_adapter_tensors(model: PeftModel, tensors: dict[str, np.ndarray]) -> None:
    """The inverse of `adapter_tensors`: start training from an existing adapter."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            stable = stable_name(name)
            if stable not in tensors:
                raise TrainingError(f"the starting adapter has no tensor {stable}")
            param.copy_(torch.from_numpy(np.ascontiguousarray(tensors[stable])))


def training_device(requested: str = "auto") -> torch.device:
    """Where training runs: ``auto`` picks the first CUDA device when torch sees one.

    >>> training_device("cpu").type
    'cpu'
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise TrainingError(f"unknown training device {requested!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"training device {requested!r} asked for, but torch sees no CUDA")
    return device


def class_balance(y: np.ndarray, num_labels: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """How to balance the classes of ``y``: (loss weights per class, None), or, when a class holds
    less than `RESAMPLE_BELOW` of the examples, (None, a sampling probability per example) that
    gives every present class the same share of each epoch. Weights of 50x and more on the few
    batches that hold a rare example make the steps spike; balanced batches give the same
    expected gradient with far less variance.

    >>> w, draw = class_balance(np.array([0, 0, 0, 1]), 2)
    >>> w.round(2).tolist(), draw
    ([0.67, 2.0], None)
    >>> w, draw = class_balance(np.array([0] * 19 + [1]), 2)
    >>> w, round(float(draw[-1]), 2), round(float(draw[:-1].sum()), 2)
    (None, 0.5, 0.5)
    """
    counts = np.bincount(y, minlength=num_labels).astype(np.float64)
    present = counts > 0
    if counts[present].min() < RESAMPLE_BELOW * len(y):
        per_example = 1.0 / counts[y]
        return None, per_example / per_example.sum()
    w = np.zeros(num_labels)
    w[present] = len(y) / (present.sum() * counts[present])
    return w, None


MIN_VALIDATION_PER_CLASS = 3
"""Early stopping needs at least this many held-out labels of every class; with fewer (a small
set, a rare class) every label trains and every planned epoch runs."""


def validation_split(
    y: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(training rows, validation rows): ``share`` of each class held out, drawn with ``seed``;
    None when a class would hold fewer than `MIN_VALIDATION_PER_CLASS` validation labels or
    keep fewer than one training label.

    >>> train_rows, val_rows = validation_split(np.array([0] * 20 + [1] * 20), 0.2, 0)
    >>> len(train_rows), len(val_rows), int(np.array([0] * 20 + [1] * 20)[val_rows].sum())
    (32, 8, 4)
    >>> validation_split(np.array([0] * 20 + [1] * 5), 0.2, 0) is None
    True
    """
    if share <= 0.0:
        return None
    rng = np.random.default_rng([seed, 7])
    held: list[np.ndarray] = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        take = round(share * rows.size)
        if take < MIN_VALIDATION_PER_CLASS or take >= rows.size:
            return None
        held.append(rng.choice(rows, take, replace=False))
    val = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(y.size), val), val


def recipe_steps(
    examples: int,
    batch_size: int,
    *,
    least_epochs: int = 1,
    least_steps: int = 100,
    most_steps: int = 500,
) -> int:
    """Optimiser steps of a fresh fine-tune on ``examples`` labels: ``least_epochs`` passes, but
    at least ``least_steps`` and at most ``most_steps``, and never less than one pass, so the
    steps never fall as the labels grow.

    The defaults are what measured best (issue 11; P=0.01, uncertainty sampling, seeds 0-2,
    mean kappa at 200 -> 400 labels): 100 steps up to 800 labels, then one pass, gave
    0.504 -> 0.514; four passes (200 steps at 400 labels) 0.504 -> 0.458; four passes with
    early stopping on a held-out fifth 0.457 -> 0.451.

    >>> [recipe_steps(n, 8) for n in (50, 200, 400, 800, 1600, 4000)]
    [100, 100, 100, 100, 200, 500]
    >>> recipe_steps(400, 8, least_epochs=4)
    200
    """
    if examples < 1 or batch_size < 1:
        raise TrainingError(f"cannot plan a fine-tune of {examples} examples in {batch_size}s")
    batches = -(-examples // batch_size)
    return max(batches, min(most_steps, max(least_steps, least_epochs * batches)))


def _batches(
    n: int, size: int, rng: np.random.Generator | None, order: np.ndarray | None = None
) -> list[np.ndarray]:
    if order is None:
        order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]


def train(
    model: PeftModel,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    config: TrainConfig,
    *,
    progress: bool = True,
) -> TrainReport:
    """Fine-tune the LoRA matrices and the head in place. ``labels`` index the model's outputs."""
    if len(texts) != len(labels):
        raise TrainingError(f"{len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise TrainingError("no training examples")
    y = np.asarray(labels, dtype=np.int64)
    head: Any = model.get_base_model().classifier  # peft wraps it; attributes pass through
    num_labels = int(head.out_features)
    if len(set(y.tolist())) < 2:
        raise TrainingError(f"training needs at least two classes, got only {sorted(set(y))}")
    if y.min() < 0 or y.max() >= num_labels:
        raise TrainingError(f"labels must lie in 0..{num_labels - 1}, got {sorted(set(y))}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    split = validation_split(y, config.validation_share, config.seed)
    val_texts: list[str] = []
    val_y = np.zeros(0, dtype=np.int64)
    if split is not None:
        val_texts, val_y = [texts[i] for i in split[1]], y[split[1]]
        texts, y = [texts[i] for i in split[0]], y[split[0]]
    weight = None
    draw: np.ndarray | None = None  # per-example sampling probabilities, when resampling
    if config.balance_classes:
        class_weights, draw = class_balance(y, num_labels)
        if class_weights is not None:
            weight = torch.tensor(class_weights, dtype=torch.float32)
    device = training_device(config.device)
    model.to(device)
    if weight is not None:
        weight = weight.to(device)
    # summed and divided by the batch size, not averaged over the batch's weights: with the
    # weighted mean, a batch without a violating item cancels its own weights, so on a 1% pool
    # the class balancing would mostly be undone (measured: kappa 0.000 vs 0.202 on a full pool)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, reduction="sum")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    batches = (len(y) + config.batch_size - 1) // config.batch_size
    steps_total = config.steps if config.steps is not None else config.epochs * batches
    if steps_total < 1:
        raise TrainingError(f"training needs at least one step, got {steps_total}")
    epochs = -(-steps_total // batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / max(1, steps_total))
    )
    model.train()
    started = time.perf_counter()
    loss_value = float("nan")
    steps = 0
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    val_losses: list[float] = []
    with tqdm(total=steps_total, desc="LoRA training", unit="step", disable=not progress) as bar:
        for epoch in range(epochs):
            order = None if draw is None else rng.choice(len(y), size=len(y), p=draw)
            for idx in _batches(len(y), config.batch_size, rng, order)[: steps_total - steps]:
                enc = encode_texts(tokenizer, [texts[i] for i in idx])
                logits = model(
                    input_ids=torch.from_numpy(enc["input_ids"]).to(device),
                    attention_mask=torch.from_numpy(enc["attention_mask"]).to(device),
                )
                loss = loss_fn(logits, torch.from_numpy(y[idx]).to(device)) / len(idx)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_value = float(loss.detach())
                steps += 1
                bar.set_postfix(loss=f"{loss_value:.3f}")
                bar.update(1)
            if val_texts:
                val_loss = balanced_loss(model, tokenizer, val_texts, val_y, device)
                val_losses.append(val_loss)
                if best is None or val_loss < best[0]:
                    best = (val_loss, epoch + 1, _trainable_state(model))
                elif epoch + 1 - best[1] >= config.patience:
                    break
                model.train()
    if best is not None:
        model.load_state_dict(best[2], strict=False)
    model.eval()
    model.to("cpu")  # export, tensors and the scorer's parity checks all work on the CPU copy
    return TrainReport(
        steps=steps,
        examples=len(y),
        final_loss=loss_value,
        seconds=time.perf_counter() - started,
        trainable_params=sum(p.numel() for p in trainable),
        device=str(device),
        best_epoch=None if best is None else best[1],
        validation_examples=len(val_texts),
        validation_losses=tuple(val_losses),
    )


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


@torch.no_grad()
def balanced_loss(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    y: np.ndarray,
    device: torch.device,
) -> float:
    """Cross-entropy on held-out labels, averaged within each class, then over classes (a rare
    class counts as much as a common one, as in training)."""
    model.eval()
    losses = []
    for idx in _batches(len(texts), 64, None):
        enc = encode_texts(tokenizer, [texts[i] for i in idx])
        logits = model(
            input_ids=torch.from_numpy(enc["input_ids"]).to(device),
            attention_mask=torch.from_numpy(enc["attention_mask"]).to(device),
        )
        target = torch.from_numpy(y[idx]).to(device)
        losses.append(torch.nn.functional.cross_entropy(logits, target, reduction="none").cpu())
    per_item = torch.cat(losses).numpy()
    return float(np.mean([per_item[y == c].mean() for c in np.unique(y)]))


@torch.inference_mode()
def predict(
    model: torch.nn.Module, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64
) -> np.ndarray:
    """Probabilities (n, labels) from the PyTorch model, in eval mode."""
    model.eval()
    out = []
    for idx in _batches(len(texts), batch_size, None):
        enc = encode_texts(tokenizer, [texts[i] for i in idx])
        logits = model(
            input_ids=torch.from_numpy(enc["input_ids"]),
            attention_mask=torch.from_numpy(enc["attention_mask"]),
        )
        out.append(softmax(logits.numpy()))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
