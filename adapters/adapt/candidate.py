"""Making and judging a candidate adapter: an incremental LoRA update that starts from the active
adapter (or from the base's own when the policy changed the categories), trained on the training
split of the current policy's consensus labels, written as an adapter artifact; and its scores on
the evaluation split through the product's own scorer (onnxruntime, the int8 base, the adapter
switched per run), next to the incumbent's. Needs the ``[train]`` extra for training."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from adapters.labels.dataset import LabeledItem, dataset_hash
from adapters.labels.store import LabeledExample
from adapters.registry.artifact import AdapterArtifact, write_artifact
from models.adapter_file import read_adapter_file, to_graph_layout
from models.errors import BorderlineError
from models.manifest import ModelManifest
from models.scorer import Scorer

__all__ = [
    "LEARNING_RATE",
    "CandidateError",
    "Judgement",
    "candidate_epochs",
    "decisions",
    "judge",
    "train_candidate",
]


class CandidateError(BorderlineError):
    """A candidate cannot be trained (no data, labels the model does not know)."""


def _items(examples: Sequence[LabeledExample], labels: Sequence[str]) -> list[LabeledItem]:
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({e.label for e in examples} - set(index))
    if unknown:
        raise CandidateError(f"labels {unknown} are not outputs of this model ({list(labels)})")
    return [LabeledItem(e.item_id, e.text, index[e.label]) for e in examples]


SMALL_SET = 400
"""Below this many labels an update trains in batches of 8, not the manifest's: a few hundred
labels in batches of 16 are too few optimiser steps to move the head."""

LEARNING_RATE = 3e-3
"""An incremental update's learning rate (the bootstrap trains its fresh head at the manifest's
1e-3). Measured in session 9 on `make demo`'s own policy-v2 labels (203 training labels, 159
audit evaluation labels, starting from the bootstrap adapter; the incumbent 0.480): at 1e-3,
kappa 0.537 / 0.68 / 0.708 / 0.749 after 3 / 6 / 8 / 10 epochs; at 3e-3, 0.636 / 0.736 after
3 / 4 epochs. On 460 uniformly drawn v2 labels (160 evaluation items), 3 epochs: 0.81-0.83 at
1e-3, 0.861 at 3e-3. At 1e-3 the demo's v2 candidates never beat the incumbent by the margin."""


def candidate_epochs(examples: int, *, target: int = 800, least: int = 3, most: int = 10) -> int:
    """Epochs of an incremental update on ``examples`` labels: about ``target`` examples seen,
    so that the first few dozen labels after a policy change get several passes; at least
    ``least``, at most ``most`` (`LEARNING_RATE` has the measurements).

    >>> [candidate_epochs(n) for n in (50, 70, 120, 200, 400, 2000)]
    [10, 10, 7, 4, 3, 3]
    """
    if examples < 1:
        raise CandidateError(f"cannot train on {examples} examples")
    return max(least, min(most, round(target / examples)))


def train_candidate(
    model_dir: Path,
    examples: Sequence[LabeledExample],
    out_dir: Path,
    *,
    start_from: AdapterArtifact | None,
    policy_version: str,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool = True,
    created_by: str = "borderline trainer",
) -> AdapterArtifact:
    """Train an adapter on ``examples`` (consensus labels, training split) and write it;
    ``epochs`` defaults to `candidate_epochs`."""
    from adapters.adapt.training import (
        TrainConfig,
        adapter_tensors,
        build_lora_model,
        set_adapter_tensors,
        train,
    )
    from models.base import base_model
    from models.scorer import TOKENIZER_FILE, load_tokenizer

    manifest = ModelManifest.read(model_dir, verify=False)
    items = _items(examples, manifest.labels)
    if len({i.label for i in items}) < 2:
        raise CandidateError(f"{len(items)} training labels, all one class: not enough to train")
    epochs = epochs or candidate_epochs(len(items))
    config = TrainConfig(
        **{
            **manifest.training.get("config", {}),
            "seed": seed,
            "epochs": epochs,
            "learning_rate": LEARNING_RATE,
        }
    )
    if len(items) < SMALL_SET:
        config = replace(config, batch_size=min(config.batch_size, 8))
    model = build_lora_model(base_model(), len(manifest.labels), config)
    if start_from is not None:
        layout = manifest.adapter_layout
        graph = read_adapter_file(start_from.path)  # graph layout: transpose back where needed
        set_adapter_tensors(model, {n: (a.T if layout[n] else a) for n, a in graph.items()})
    tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE, manifest.max_length)
    report = train(
        model,
        tokenizer,
        [i.text for i in items],
        [i.label for i in items],
        config,
        progress=progress,
    )
    data_hash = dataset_hash(items)
    adapter_id = f"{policy_version}-{data_hash[:8]}-s{seed}-{int(time.time())}"
    return write_artifact(
        out_dir / adapter_id,
        adapter_id=adapter_id,
        params=to_graph_layout(adapter_tensors(model), manifest.adapter_layout),
        base_model_version=manifest.model_version,
        policy_version=policy_version,
        labels=manifest.labels,
        parent_id=start_from.adapter_id if start_from else None,
        training={
            "data_sha256": data_hash,
            "examples": report.examples,
            "seed": seed,
            "epochs": epochs,
            "steps": report.steps,
            "seconds": round(report.seconds, 2),
            "device": report.device,
            "final_loss": round(report.final_loss, 6),
            "started_from": start_from.adapter_id if start_from else "base",
        },
        created_by=created_by,
    )


def decisions(scorer: Scorer, adapter_id: str, texts: Sequence[str]) -> list[str]:
    """The label each text gets from ``adapter_id`` (argmax), scored in batches of 32."""
    out: list[str] = []
    for i in range(0, len(texts), 32):
        probs = scorer.score(texts[i : i + 32], adapter_id=adapter_id).probabilities
        out += [scorer.labels[j] for j in probs.argmax(axis=1)]
    return out


@dataclass(frozen=True)
class Judgement:
    expert: list[str]
    candidate: list[str]
    incumbent: list[str]
    shadow_agreement: float | None


def judge(
    scorer: Scorer,
    candidate: AdapterArtifact,
    incumbent_id: str,
    evaluation: Sequence[LabeledExample],
    recent_texts: Sequence[str] = (),
) -> Judgement:
    """Score the evaluation split with the candidate and the incumbent (one session, adapters
    switched per run), and the recent live texts in shadow with both."""
    scorer.load_adapter(candidate.adapter_id, candidate.path)
    texts = [e.text for e in evaluation]

    def decide(adapter_id: str, batch_texts: Sequence[str]) -> list[str]:
        return decisions(scorer, adapter_id, batch_texts)

    shadow = None
    if recent_texts:
        mine, theirs = (
            decide(candidate.adapter_id, recent_texts),
            decide(incumbent_id, recent_texts),
        )
        shadow = float(np.mean([a == b for a, b in zip(mine, theirs, strict=True)]))
    return Judgement(
        expert=[e.label for e in evaluation],
        candidate=decide(candidate.adapter_id, texts),
        incumbent=decide(incumbent_id, texts),
        shadow_agreement=shadow,
    )
