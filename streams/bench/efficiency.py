"""`borderline bench label-efficiency`: the method's rounds replayed offline on any labelled JSONL,
to measure how many expert labels each curation strategy needs (the headline figure of the
published method, DESIGN.md "The method it implements").

The loop itself (pools, rounds, strategies, curves) lives in `adapters.offline.efficiency` and is
pure; this module is the glue: it reads the data, cuts list footers and drops duplicates
(`adapters.offline.boilerplate`, before any draw), computes the base encoder's embeddings once
(cached on disk), fine-tunes LoRA through the product's own training path at every point of every
curve, writes the JSON and the plot, and prints the summary table. torch is imported only inside
the functions that need it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from adapters.labels.dataset import LabeledItem, dataset_hash, read_jsonl, write_jsonl
from adapters.offline.boilerplate import clean_corpus
from adapters.offline.draws import QUICK, BenchConfig, EfficiencyError, check_feasible
from adapters.offline.efficiency import run_benchmark
from streams.bench.efficiency_report import summary_table, write_plot
from streams.bench.embedding import EMBED_MAX_LENGTH, EmbeddingCache

__all__ = ["bench_label_efficiency", "lora_trainer"]


LORA_MAX_LENGTH = 32


"""Tokens per text in the benchmark's fine-tunes (the product uses 128): what fits 100 fine-tunes
in the time budget on 2 cores. Mostly the subject line and the first words of the body."""


LORA_BATCH_SIZE = 8


LORA_LEARNING_RATE = 3e-3


"""Against the product's defaults (batch 16, 1e-3): a fine-tune here gets 100-500 optimiser
steps, and with the defaults 100 steps leave the fresh head undertrained (calibrated on the
corpus: kappa 0.1-0.5 where these settings give 0.55-0.67 on the same labels)."""


LORA_VALIDATION_SHARE = 0.0


"""Early stopping (`adapters.adapt.training.train`) is off here: on a fifth of a few hundred
labels (4-7 violating items at P=0.01) the held-out loss was noisy, picked the first pass and
cost 0.05 kappa on average (measured, issue 11)."""


@dataclass
class LoraCost:
    fits: int = 0
    examples: int = 0
    steps: int = 0
    seconds: float = 0.0
    early_stopped: int = 0  # fits whose epoch was chosen on held-out labels


def lora_trainer(
    texts: Sequence[str], labels: np.ndarray, max_length: int, cost: LoraCost
) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """A `TrainFn`: fine-tune a fresh LoRA adapter and head with `adapters.adapt.training` (the
    product's path: r=8 on query/value plus the head, balanced classes, AdamW, linear decay) on
    the given rows for `recipe_steps` steps, and return
    its argmax decisions on the test rows, scored by torch ``predict``."""
    from adapters.adapt.training import (
        TrainConfig,
        build_lora_model,
        predict,
        recipe_steps,
        train,
    )
    from models.base import base_model
    from models.scorer import TOKENIZER_FILE, load_tokenizer

    base = base_model()
    tokenizer = load_tokenizer(base.path / TOKENIZER_FILE, max_length)

    def train_and_decide(train_rows: np.ndarray, test_rows: np.ndarray, seed: int) -> np.ndarray:
        started = time.perf_counter()
        config = TrainConfig(
            steps=recipe_steps(len(train_rows), LORA_BATCH_SIZE),
            batch_size=LORA_BATCH_SIZE,
            learning_rate=LORA_LEARNING_RATE,
            max_length=max_length,
            seed=seed,
            validation_share=LORA_VALIDATION_SHARE,
        )
        model = build_lora_model(base, 2, config)
        report = train(
            model,
            tokenizer,
            [texts[i] for i in train_rows],
            [int(labels[i]) for i in train_rows],
            config,
            progress=False,
        )
        probs = predict(model, tokenizer, [texts[i] for i in test_rows])
        cost.fits += 1
        cost.examples += len(train_rows)
        cost.steps += report.steps
        if report.best_epoch is not None:
            cost.early_stopped += 1
        cost.seconds += time.perf_counter() - started
        return np.asarray(probs.argmax(axis=1), dtype=np.int64)

    return train_and_decide


def _clean_items(items: Sequence[LabeledItem]) -> tuple[list[LabeledItem], dict[str, Any]]:
    """The items with list footers cut and duplicates dropped (`adapters.offline.boilerplate`)."""
    kept, texts, report = clean_corpus([i.text for i in items], [i.label for i in items])
    cleaned = [replace(items[k], text=t) for k, t in zip(kept, texts, strict=True)]
    return cleaned, {**report, "cleaned_hash": dataset_hash(cleaned)}


def _write_clean(
    items: Sequence[LabeledItem], hygiene: dict[str, Any], data_path: Path, cache_dir: Path
) -> Path:
    """The cleaned items as a JSONL in the cache folder (once), so the embeddings are keyed by
    the cleaned texts."""
    path = cache_dir / f"{data_path.stem}-clean-{hygiene['cleaned_hash'][:12]}.jsonl"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(path, items)
    hygiene["cleaned_file"] = str(path)
    return path


def bench_label_efficiency(
    data_path: Path,
    out_json: Path,
    *,
    prevalences: Sequence[float] | None,
    seeds: int | None,
    quick: bool,
    cache_dir: Path,
    pool_size: int | None = None,
    lora_max_length: int = LORA_MAX_LENGTH,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark, write the JSON and one PNG per prevalence next to it, print the table."""
    started = time.perf_counter()
    config = QUICK if quick else BenchConfig()
    changes: dict[str, Any] = {}
    if prevalences:
        changes["prevalences"] = tuple(prevalences)
    if seeds is not None:
        changes["seeds"] = seeds
    if pool_size is not None:
        changes["pool_size"] = pool_size
    config = replace(config, **changes)

    raw_items: list[LabeledItem] = read_jsonl(data_path)
    items, hygiene = _clean_items(raw_items)
    texts = [i.text for i in items]
    labels = np.array([i.label for i in items], dtype=np.int64)
    try:
        check_feasible(labels, config)
    except EfficiencyError as exc:
        raise EfficiencyError(f"{data_path}: {exc}") from None
    clean_path = _write_clean(items, hygiene, data_path, cache_dir)
    embeddings, embed_info = EmbeddingCache(cache_dir).load_or_compute(
        clean_path, texts, EMBED_MAX_LENGTH, progress=progress
    )
    cost = LoraCost()
    evaluate = lora_trainer(texts, labels, lora_max_length, cost)

    def log(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    bench_started = time.perf_counter()
    per_prevalence = run_benchmark(labels, embeddings, config, evaluate=evaluate, log=log)
    bench_seconds = time.perf_counter() - bench_started
    results: dict[str, Any] = {
        "benchmark": "label-efficiency",
        "data": {
            "path": str(data_path),
            "items_before_cleaning": len(raw_items),
            "sha256": embed_info["data_sha256"],
            "sha256_of": "the cleaned file (corpus_hygiene.cleaned_file)",
            "items": len(items),
            "violating": int(labels.sum()),
        },
        "config": {**config.as_dict(), "quick": quick},
        "selection_model": (
            "logistic regression (scikit-learn, class_weight=balanced) on frozen mean-pooled "
            f"base-encoder embeddings (max_length {EMBED_MAX_LENGTH}), refitted every round; it "
            "scores the pool for every strategy between checkpoints"
        ),
        "evaluated_model": {
            "kind": "lora",
            "path": "adapters.training: build_lora_model + train (the product's training path)",
            "train_config": {
                "max_length": lora_max_length,
                "steps": "recipe_steps(n, batch 8) = max(one pass, min(500, max(100, one "
                "pass))): 100 steps up to 800 labels, then one pass; never falls as labels grow",
                "early_stopping": "off (validation_share 0): measured noisier than none",
                "batch_size": LORA_BATCH_SIZE,
                "learning_rate": LORA_LEARNING_RATE,
                "other": "TrainConfig defaults otherwise (r=8, alpha=16, query/value + head, "
                "AdamW, linear decay, balanced classes); a fresh adapter per point",
            },
            "budget_note": f"max_length {lora_max_length}, batch {LORA_BATCH_SIZE}, lr "
            f"{LORA_LEARNING_RATE} (the product: 128, 16, 1e-3) to fit the fine-tunes in the "
            "time budget on 2 cores",
            "scoring": "torch predict, argmax; the int8 ONNX scorer's parity with torch is "
            "checked by `model init` and the model tests, not here",
        },
        "model_kind": "every point of every curve, random's tail and the full-data reference "
        "included, is a LoRA fine-tune (the frozen_head section is a separate, cheaper model "
        "kind, compared only with itself)",
        "kappa": "Cohen's kappa (adapters.agreement.kappa) of the decisions against the test "
        "labels, sample_weight giving violating items the pool's share P of the weight",
        "labels_to_95pct_rule": "smallest label count from which the mean kappa over seeds "
        "stays at or above 0.95 of the full-data kappa (mean over seeds of each seed's pool, "
        "scored on that seed's test set) at every larger measured count; null if the last "
        "point is below",
        "multiplier_95_rule": "random's labels_to_95pct / the best curated strategy's; null if "
        "either is null",
        "seed_labels": f"{config.seed_labels} drawn uniformly from the pool, benign ones swapped "
        f"for random violating ones until at least {config.seed_positives} are violating; the "
        "same for every strategy",
        "rounds": f"each gap between checkpoints in {config.rounds_per_checkpoint} equal rounds; "
        f"random continues x{config.tail_factor} up to the whole pool, LoRA at every step (its "
        "whole-pool point is the full-data fit itself)",
        "boundary": "adapters.curation.boundary_pairs over every unlabelled pool item with the "
        "selection model's probabilities, max_pairs = budget // 2; a shortfall (odd budget, too "
        "few overlapping pairs) is topped up with the most uncertain items and counted in "
        "boundary_topped_up_labels",
        "corpus_hygiene": hygiene,
        "embeddings": embed_info,
        "prevalences": per_prevalence,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    plots = []
    for prevalence, res in per_prevalence.items():
        plot = out_json.with_name(f"{out_json.stem}-p{prevalence}.png")
        write_plot(plot, prevalence, res)
        plots.append(str(plot))
    results["plots"] = plots
    results["timings"] = {
        "total_seconds": round(time.perf_counter() - started, 1),
        "embedding_seconds": round(float(embed_info["seconds"]), 1),
        "embedding_cache": embed_info["cache"],
        "rounds_and_evaluation_seconds": round(bench_seconds, 1),
        "lora_fits": cost.fits,
        "lora_seconds": round(cost.seconds, 1),
        "lora_steps": cost.steps,
        "lora_fits_with_early_stopping": cost.early_stopped,
        "lora_examples": cost.examples,
    }
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    print(summary_table(results))
    t = results["timings"]
    print(
        f"\nwall {t['total_seconds']}s (embeddings {t['embedding_seconds']}s, cache "
        f"{t['embedding_cache']}; {t['lora_fits']} LoRA fine-tunes {t['lora_seconds']}s)"
    )
    print(f"wrote {out_json} and {', '.join(plots)}")
    return results
