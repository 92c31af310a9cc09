"""The candidate's parts that need no training, with a small fake of the scorer's interface
(``labels``, ``score(texts, adapter_id=)``, ``load_adapter``): how many epochs an update gets,
the consensus labels mapped to the model's outputs (unknown ones refused by name, one class
refused before any training), decisions scored in batches with the adapter asked for, and a
judgement that scores the evaluation split and the live texts with both adapters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from adapters.adapt.candidate import (
    CandidateError,
    _items,
    candidate_epochs,
    decisions,
    judge,
    train_candidate,
)
from adapters.labels.dataset import LabeledItem
from adapters.labels.store import LabeledExample
from adapters.registry.artifact import AdapterArtifact, AdapterManifest
from models.manifest import ModelManifest
from models.scorer import ScoreBatch

LABELS = ("benign", "violating")


@dataclass
class FakeScorer:
    """Scores a text as violating when it contains ``word``; per adapter: "inverted-*" adapters
    answer the opposite. Records every call."""

    word: str = "spam"
    labels: tuple[str, ...] = LABELS
    calls: list[tuple[str | None, int]] = field(default_factory=list)
    loaded: dict[str, Path] = field(default_factory=dict)

    def score(self, texts: Sequence[str], adapter_id: str | None = None) -> ScoreBatch:
        self.calls.append((adapter_id, len(texts)))
        hit = np.array([self.word in t for t in texts], dtype=bool)
        if adapter_id is not None and adapter_id.startswith("inverted"):
            hit = ~hit
        p = np.where(hit, 0.9, 0.1).astype(np.float32)
        return ScoreBatch(
            np.stack([1 - p, p], axis=1), np.zeros((len(texts), 2), np.float32), self.labels
        )

    def load_adapter(self, adapter_id: str, path: Path) -> None:
        self.loaded[adapter_id] = path


def _example(item_id: str, label: str, text: str | None = None) -> LabeledExample:
    return LabeledExample(item_id, text or f"text {item_id}", label, 3)


def _artifact(adapter_id: str, tmp: Path) -> AdapterArtifact:
    manifest = AdapterManifest(
        adapter_id=adapter_id,
        base_model_version="m-test",
        policy_version="v1",
        labels=list(LABELS),
        files={},
        created_at=1.0,
    )
    return AdapterArtifact(manifest, tmp / adapter_id)


def test_epochs_aim_at_about_800_examples_within_bounds() -> None:
    assert candidate_epochs(80) == 10  # 800 / 80
    assert candidate_epochs(150) == 5
    assert candidate_epochs(203) == 4  # make demo's v2 round: 3 epochs were too few
    assert candidate_epochs(1) == 10  # at most `most`
    assert candidate_epochs(5000) == 3  # at least `least`
    assert candidate_epochs(100, target=1000, least=1, most=20) == 10
    assert candidate_epochs(3000, target=1000, least=1, most=20) == 1  # 0.33 rounds to 0
    for bad in (0, -5):
        with pytest.raises(CandidateError, match=f"cannot train on {bad} examples"):
            candidate_epochs(bad)


def test_consensus_labels_map_to_the_model_outputs_and_unknown_ones_are_refused() -> None:
    examples = [_example("a", "violating"), _example("b", "benign")]
    assert _items(examples, LABELS) == [
        LabeledItem("a", "text a", 1),
        LabeledItem("b", "text b", 0),
    ]
    assert _items([], LABELS) == []
    with pytest.raises(CandidateError, match=r"labels \['promo', 'scam'\] are not outputs"):
        _items([*examples, _example("c", "scam"), _example("d", "promo")], LABELS)


def test_decisions_are_scored_in_batches_of_32_with_the_adapter_asked_for() -> None:
    scorer = FakeScorer()
    texts = [("spam " if k % 3 == 0 else "ham ") + str(k) for k in range(70)]
    got = decisions(scorer, "cand-1", texts)  # type: ignore[arg-type]
    assert got == ["violating" if k % 3 == 0 else "benign" for k in range(70)]
    assert scorer.calls == [("cand-1", 32), ("cand-1", 32), ("cand-1", 6)]
    assert decisions(scorer, "cand-1", []) == []  # type: ignore[arg-type]


def test_judge_scores_evaluation_and_live_texts_with_candidate_and_incumbent(
    tmp_path: Path,
) -> None:
    scorer = FakeScorer()
    candidate = _artifact("inverted-1", tmp_path)
    evaluation = [_example("a", "violating", "spam a"), _example("b", "benign", "ham b")]
    live = ["spam x", "ham y", "ham z", "spam w"]
    verdict = judge(scorer, candidate, "boot", evaluation, live)  # type: ignore[arg-type]
    assert scorer.loaded == {"inverted-1": candidate.path}
    assert verdict.expert == ["violating", "benign"]
    assert verdict.incumbent == ["violating", "benign"]
    assert verdict.candidate == ["benign", "violating"]  # the inverted adapter
    assert verdict.shadow_agreement == 0.0
    same = judge(scorer, _artifact("cand-2", tmp_path), "boot", evaluation, live)  # type: ignore[arg-type]
    assert same.shadow_agreement == 1.0
    quiet = judge(scorer, _artifact("cand-3", tmp_path), "boot", evaluation)  # type: ignore[arg-type]
    assert quiet.shadow_agreement is None


def _model_dir(tmp: Path) -> Path:
    ModelManifest(
        model_version="m-test",
        adapter_version="boot",
        base_model="tiny",
        base_revision="tiny==0",
        labels=list(LABELS),
        policy_version="v1",
        max_length=16,
        onnx_file="model.int8.onnx",
        files={},
        created_at=1.0,
    ).write(tmp)
    return tmp


def test_a_candidate_is_refused_before_training_on_unknown_or_one_class_labels(
    tmp_path: Path,
) -> None:
    model_dir = _model_dir(tmp_path)
    out = tmp_path / "out"
    one_class = [_example(f"i{k}", "benign") for k in range(30)]
    with pytest.raises(CandidateError, match="30 training labels, all one class"):
        train_candidate(model_dir, one_class, out, start_from=None, policy_version="v1")
    with pytest.raises(CandidateError, match=r"labels \['promo'\] are not outputs"):
        train_candidate(
            model_dir,
            [*one_class, _example("p", "promo")],
            out,
            start_from=None,
            policy_version="v2",
        )
    assert not out.exists()
