"""onnxruntime's adapter mechanism against the same adapter merged into the weights, on the real
encoder: one adapter-ready base (fused by onnxruntime's transformer optimizer before int8), two
different adapters switched per run, each matching its own merged export, and the fused graph
deciding as the unfused one does. Adapters here are random (the mechanism is under test, not
training)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.adapt.training import TrainConfig, adapter_tensors, build_lora_model
from models.adapter_file import AdapterFileError, to_graph_layout, write_adapter_file
from models.base import base_model
from models.export import export_onnx
from models.lora_graph import fused_operators, make_adapter_ready
from models.scorer import TOKENIZER_FILE, Scorer

pytestmark = pytest.mark.model

EXCERPT = Path(__file__).resolve().parent.parent / "data" / "spamassassin_excerpt.jsonl"
TEXTS = [
    "Subject: WIN a FREE cruise!!! click now to claim your prize",
    "Subject: meeting notes\n\nHi all, attached are the notes from Tuesday's design review.",
    "Subject: Re: kernel patch\n\nThe fix looks right to me, but please add a test.",
    "Subject: cheap meds online no prescription needed, lowest prices guaranteed",
    "Subject: newsletter\n\nThis week: three new articles on gardening and a recipe.",
]


def _random_adapter(seed: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = build_lora_model(base_model(), 2, TrainConfig(seed=seed))
    with torch.no_grad():
        for _name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(torch.randn_like(param) * 0.08)
    model.eval()
    return model


def _merged_scorer(model, path: Path) -> Scorer:  # type: ignore[no-untyped-def]
    merged = copy.deepcopy(model).merge_and_unload()
    export_onnx(merged, path)
    return Scorer(path, base_model().path / TOKENIZER_FILE, ["benign", "violating"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("parity")
    base = _random_adapter(1)
    export_onnx(base.get_base_model(), tmp / "exported.onnx")
    layout = make_adapter_ready(
        tmp / "exported.onnx", adapter_tensors(base), tmp / "fp32.onnx", tmp / "int8.onnx"
    )
    make_adapter_ready(
        tmp / "exported.onnx",
        adapter_tensors(base),
        tmp / "fp32-unfused.onnx",
        tmp / "int8-unfused.onnx",
        fuse=False,
    )
    adapters = {}
    for seed in (2, 3):
        model = _random_adapter(seed)
        path = write_adapter_file(
            tmp / f"a{seed}.onnx_adapter", to_graph_layout(adapter_tensors(model), layout)
        )
        adapters[f"a{seed}"] = (path, _merged_scorer(model, tmp / f"merged{seed}.onnx"))
    return tmp, adapters, _merged_scorer(base, tmp / "merged1.onnx")


def test_adapters_through_onnxruntime_match_merged_weights(built) -> None:  # type: ignore[no-untyped-def]
    tmp, adapters, merged_base = built
    tokenizer = base_model().path / TOKENIZER_FILE
    fp32 = Scorer(tmp / "fp32.onnx", tokenizer, ["benign", "violating"], adapter_version="base")
    int8 = Scorer(tmp / "int8.onnx", tokenizer, ["benign", "violating"], adapter_version="base")
    # no adapter active: the base's own tensors
    np.testing.assert_allclose(
        fp32.score(TEXTS).probabilities, merged_base.score(TEXTS).probabilities, atol=1e-4
    )
    outputs = []
    for adapter_id, (path, merged) in adapters.items():
        for scorer in (fp32, int8):
            scorer.load_adapter(adapter_id, path)
        reference = merged.score(TEXTS).probabilities
        got = fp32.score(TEXTS, adapter_id=adapter_id)
        assert got.adapter_id == adapter_id
        np.testing.assert_allclose(got.probabilities, reference, atol=1e-4)  # fp32: exact path
        quantised = int8.score(TEXTS, adapter_id=adapter_id).probabilities
        diff = float(np.abs(quantised - reference).max())
        print(f"{adapter_id}: int8 adapter-ready vs fp32 merged, max prob diff {diff:.4f}")
        assert diff < 0.1
        outputs.append(reference)
    assert np.abs(outputs[0] - outputs[1]).max() > 0.01, "the two adapters should differ"
    # switching is per run and instant: activate one, then the other, on the same session
    fp32.activate("a3")
    np.testing.assert_allclose(fp32.score(TEXTS).probabilities, outputs[1], atol=1e-4)
    fp32.activate("a2")
    np.testing.assert_allclose(fp32.score(TEXTS).probabilities, outputs[0], atol=1e-4)


def test_adapter_of_another_shape_is_refused(built) -> None:  # type: ignore[no-untyped-def]
    tmp, _adapters, _ = built
    tokenizer = base_model().path / TOKENIZER_FILE
    scorer = Scorer(tmp / "int8.onnx", tokenizer, ["benign", "violating"], adapter_version="base")
    wrong = write_adapter_file(
        tmp / "wrong.onnx_adapter", {"classifier.bias": np.zeros(3, dtype=np.float32)}
    )
    with pytest.raises(AdapterFileError, match="does not fit"):
        scorer.load_adapter("wrong", wrong)
    assert scorer.loaded_adapters == ["base"]


def test_fused_graph_decides_as_the_unfused_one_with_every_adapter(built) -> None:  # type: ignore[no-untyped-def]
    tmp, adapters, _ = built
    tokenizer = base_model().path / TOKENIZER_FILE
    assert fused_operators(tmp / "int8.onnx") == {"SkipLayerNormalization": 12, "BiasGelu": 6}
    assert fused_operators(tmp / "int8-unfused.onnx") == {}
    scorers = {
        name: Scorer(tmp / f"{name}.onnx", tokenizer, ["benign", "violating"], adapter_version="b")
        for name in ("fp32", "fp32-unfused", "int8", "int8-unfused")
    }
    for adapter_id, (path, _merged) in [("b", (None, None)), *adapters.items()]:
        if path is not None:
            for scorer in scorers.values():
                scorer.load_adapter(adapter_id, path)
        got = {name: s.score(TEXTS, adapter_id=adapter_id) for name, s in scorers.items()}
        np.testing.assert_allclose(
            got["fp32"].probabilities, got["fp32-unfused"].probabilities, atol=1e-4
        )
        diff = float(np.abs(got["int8"].probabilities - got["int8-unfused"].probabilities).max())
        print(f"{adapter_id}: int8 fused vs unfused, max prob diff {diff:.4f}")
        assert diff < 0.1
    # the swap on the fused int8 base: activating an adapter changes what a block is scored with
    fused = scorers["int8"]
    fused.activate("a3")
    assert fused.score(TEXTS).adapter_id == "a3"
    np.testing.assert_array_equal(
        fused.score(TEXTS).probabilities, fused.score(TEXTS, adapter_id="a3").probabilities
    )
    fused.activate("b")
    assert np.abs(fused.score(TEXTS).probabilities - got["int8"].probabilities).max() > 0.01
