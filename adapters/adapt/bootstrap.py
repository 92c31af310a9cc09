"""The model bootstrap behind `borderline model init`: train a first LoRA adapter and head on a few
hundred expert labels, export to ONNX, quantise to int8, verify the int8 export against PyTorch on
held-out items, and write the model folder with its manifest."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapters.adapt.training import TrainConfig, adapter_tensors, build_lora_model, predict, train
from adapters.labels.agreement import kappa
from adapters.labels.dataset import LabeledItem, dataset_hash
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, write_artifact
from models.adapter_file import to_graph_layout
from models.base import base_model
from models.export import ExportError, export_onnx, parity
from models.lora_graph import make_adapter_ready
from models.manifest import ModelManifest
from models.network import MeanPoolClassifier
from models.scorer import TOKENIZER_FILE, Scorer, load_tokenizer

__all__ = ["FP32_FILE", "ONNX_FILE", "BootstrapResult", "bootstrap_model"]

ONNX_FILE = "model.int8.onnx"
FP32_FILE = "model.fp32.onnx"
ADAPTER_DIR = "adapter"
MIN_AGREEMENT = 0.99
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


@dataclass(frozen=True)
class BootstrapResult:
    manifest: ModelManifest
    model_dir: Path


def _kappa_of(probs: np.ndarray, labels: Sequence[int]) -> float | None:
    return kappa(np.asarray(labels), probs.argmax(axis=1))


def bootstrap_model(
    train_items: Sequence[LabeledItem],
    holdout_items: Sequence[LabeledItem],
    out_dir: Path,
    *,
    config: TrainConfig,
    policy_version: str = "v1",
    categories: Sequence[str] = ("violating",),
    progress: bool = True,
    keep_fp32: bool = False,
) -> BootstrapResult:
    """Build a complete model folder in ``out_dir`` (replaced atomically when done)."""
    if not holdout_items:
        raise ExportError("the bootstrap needs held-out items to verify the export")
    base = base_model()
    labels = ["benign", *categories]
    tokenizer = load_tokenizer(base.path / TOKENIZER_FILE, config.max_length)
    model = build_lora_model(base, len(labels), config)

    holdout_texts = [i.text for i in holdout_items]
    holdout_y = [i.label for i in holdout_items]
    untrained = predict(model, tokenizer, holdout_texts)
    report = train(
        model,
        tokenizer,
        [i.text for i in train_items],
        [i.label for i in train_items],
        config,
        progress=progress,
    )
    torch_probs = predict(model, tokenizer, holdout_texts)

    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".model-", dir=out_dir.parent))
    try:
        model.save_pretrained(str(work / ADAPTER_DIR))  # safetensors + JSON config
        params = adapter_tensors(model)
        # unmerged: the LoRA path stays in the graph and becomes overridable per run
        network = model.get_base_model()
        assert isinstance(network, MeanPoolClassifier)
        exported = export_onnx(network, work / "exported.onnx")
        fp32 = work / FP32_FILE
        layout = make_adapter_ready(exported, params, fp32, work / ONNX_FILE)
        exported.unlink()
        if not keep_fp32:
            fp32.unlink()
        for name in _TOKENIZER_FILES:
            if (base.path / name).is_file():
                shutil.copy2(base.path / name, work / name)

        scorer = Scorer(
            work / ONNX_FILE, work / TOKENIZER_FILE, labels, max_length=config.max_length
        )
        onnx_probs = scorer.score(holdout_texts).probabilities
        check = parity(torch_probs, onnx_probs)
        if check.decision_agreement < MIN_AGREEMENT:
            raise ExportError(
                f"int8 export agrees with PyTorch on {check.decision_agreement:.1%} of held-out "
                f"items (need {MIN_AGREEMENT:.0%}); max probability difference "
                f"{check.max_abs_prob_diff:.3f}"
            )
        data_hash = dataset_hash(train_items)
        files = [p.relative_to(work).as_posix() for p in sorted(work.rglob("*")) if p.is_file()]
        hashes = ModelManifest.hash_files(work, files)
        adapter_version = f"bootstrap-{data_hash[:8]}-s{config.seed}"
        model_version = "m-" + hashlib.sha256(hashes[ONNX_FILE].encode()).hexdigest()[:12]
        training = {
            "data_sha256": data_hash,
            "examples": report.examples,
            "positives": int(sum(1 for i in train_items if i.label > 0)),
            "steps": report.steps,
            "final_loss": round(report.final_loss, 6),
            "seconds": round(report.seconds, 2),
            "device": report.device,
            "trainable_params": report.trainable_params,
            "config": config.as_dict(),
            "item_ids": sorted(i.item_id for i in train_items),  # lineage: never replay these
        }
        # the base's own adapter, as an artifact: promoting it back is a rollback to the start
        write_artifact(
            work / BOOTSTRAP_ARTIFACT,
            adapter_id=adapter_version,
            params=to_graph_layout(params, layout),
            base_model_version=model_version,
            policy_version=policy_version,
            labels=labels,
            training=training,
            metrics={"kappa_int8_holdout": _kappa_of(onnx_probs, holdout_y)},
        )
        files = [p.relative_to(work).as_posix() for p in sorted(work.rglob("*")) if p.is_file()]
        hashes = ModelManifest.hash_files(work, files)
        manifest = ModelManifest(
            model_version=model_version,
            adapter_version=adapter_version,
            base_model=base.name,
            base_revision=base.revision,
            labels=labels,
            policy_version=policy_version,
            max_length=config.max_length,
            onnx_file=ONNX_FILE,
            files=hashes,
            adapter_layout=layout,
            training=training,
            evaluation={
                "holdout_items": len(holdout_items),
                "holdout_sha256": dataset_hash(holdout_items),
                "kappa_untrained_head": _kappa_of(untrained, holdout_y),
                "kappa_torch": _kappa_of(torch_probs, holdout_y),
                "kappa_int8": _kappa_of(onnx_probs, holdout_y),
                "int8_vs_torch": check.as_dict(),
            },
            created_at=time.time(),
        )
        manifest.write(work)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.chmod(0o755)
        work.rename(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BootstrapResult(manifest=manifest, model_dir=out_dir)
