"""Making an exported classifier adapter-ready for onnxruntime's LoRA adapters.

The exporters constant-fold the LoRA matrices into pre-transposed initializers with meaningless
names and keep alpha/r as a constant multiply. This module finds those tensors by value against
the peft weights (W or W.T), renames them to stable names, rewrites the head Gemm to MatMul+Add
(so one adapter file fits both the fp32 and the int8 base), fuses the encoder with onnxruntime's
transformer optimizer (`fuse_encoder`), quantises everything else to int8 (per-channel) while
keeping the LoRA path and the head in float, and finally turns each tensor into an overridable
initializer (a graph input whose default is the initializer). An adapter file then overrides them
per run: one base session, adapters switched without reloading.

Written by hand because no library does it: onnxruntime ships the adapter format and the fusions,
not the export that keeps the one working with the other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.onnx_model import ONNXModel
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from models.errors import BorderlineError

__all__ = [
    "LoraGraphError",
    "fuse_encoder",
    "fused_operators",
    "graph_layout_of",
    "make_adapter_ready",
]

# The operators onnxruntime's transformer optimizer writes (domain com.microsoft).
_FUSED_OPS = ("SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu", "EmbedLayerNormalization")


class LoraGraphError(BorderlineError):
    """The exported graph does not hold the adapter tensors where they were expected."""


def _match(arrays: Mapping[str, np.ndarray], weight: np.ndarray) -> tuple[str, bool]:
    """The one initializer equal to ``weight`` (False) or to its transpose (True)."""
    hits: list[tuple[str, bool]] = []
    for name, arr in arrays.items():
        if arr.dtype != np.float32:
            continue
        if arr.shape == weight.shape and np.array_equal(arr, weight):
            hits.append((name, False))
        elif weight.ndim == 2 and arr.shape == weight.T.shape and np.array_equal(arr, weight.T):
            hits.append((name, True))
    if len(hits) != 1:
        raise LoraGraphError(
            f"expected one initializer equal to a {weight.shape} adapter tensor, found "
            f"{len(hits)} (an untrained LoRA B is all zeros: train or perturb it first)"
        )
    return hits[0]


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    for init in model.graph.initializer:
        if init.name == old:
            init.name = new
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _readers(model: onnx.ModelProto, names: set[str]) -> list[str]:
    nodes = []
    for k, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{k}"
        if names & set(node.input):
            nodes.append(node.name)
    return nodes


def _make_overridable(model: onnx.ModelProto, names: set[str]) -> None:
    present = {i.name for i in model.graph.input}
    for init in model.graph.initializer:
        if init.name in names and init.name not in present:
            model.graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )


@contextmanager
def _library_info_muted() -> Iterator[None]:
    """onnxruntime's optimizer and quantiser log every fused node and unknown tensor type at INFO
    (about 100 lines a model, on the root logger and their own): warnings still pass."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def fuse_encoder(model: onnx.ModelProto) -> onnx.ModelProto:
    """The BERT-family encoder of ``model`` with onnxruntime's transformer optimizer's fusions
    (model_type bert: residual + bias + LayerNorm into SkipLayerNormalization, bias + erf GELU
    into BiasGelu), in Python only (``opt_level=0``): an onnxruntime pass here would constant-fold
    the LoRA path, which must stay a separate MatMul chain reading its own tensors.

    Attention fusion is off on purpose: the fused Attention op takes one concatenated QKV weight,
    where the LoRA tensors on query and value could no longer be overridden. (It would not match
    anyway: measured on all-MiniLM-L6-v2 exported by transformers 5, neither the LoRA Adds on
    query/value nor the exporter's mask construction fit its pattern, merged or not.)
    """
    options = FusionOptions("bert")
    options.enable_attention = False
    with _library_info_muted():
        fused = optimize_model(model, model_type="bert", optimization_options=options, opt_level=0)
    out: onnx.ModelProto = fused.model
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return out


def fused_operators(path: Path) -> dict[str, int]:
    """How many of each fused operator a saved model holds (empty: an unfused graph)."""
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in _FUSED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def make_adapter_ready(
    exported: Path,
    adapter_params: Mapping[str, np.ndarray],
    fp32_out: Path,
    int8_out: Path,
    *,
    fuse: bool = True,
) -> dict[str, bool]:
    """Rewrite ``exported`` (an unmerged export) into adapter-ready fp32 and int8 models, fused
    before quantisation (`fuse_encoder`) unless ``fuse`` is False.

    ``adapter_params`` maps stable names to the peft tensors as peft holds them. Returns the
    layout: for each stable name, whether the graph holds it transposed (an adapter file must
    store it the same way).
    """
    model = onnx.load(str(exported))
    model.graph.ClearField("value_info")  # stale shapes after the rewrite; ORT re-infers them
    ONNXModel(model).replace_gemm_with_matmul()
    # the rewrite leaves the Gemm's original (untransposed) weight behind, unused: drop such
    used = {name for node in model.graph.node for name in node.input}
    stale = [i for i in model.graph.initializer if i.name not in used]
    for init in stale:
        model.graph.initializer.remove(init)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    layout: dict[str, bool] = {}
    for stable, weight in adapter_params.items():
        found, transposed = _match(arrays, np.asarray(weight, dtype=np.float32))
        _rename(model, found, stable)
        arrays[stable] = arrays.pop(found)
        layout[stable] = transposed
    names = set(layout)
    if fuse:
        model = fuse_encoder(model)
        missing = names - {i.name for i in model.graph.initializer}
        if missing:
            raise LoraGraphError(f"fusion lost adapter tensors: {sorted(missing)[:3]}")
    keep_float = _readers(model, names)
    onnx.save(model, str(fp32_out))

    with _library_info_muted():
        quantize_dynamic(
            str(fp32_out),
            str(int8_out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=keep_float,
            # shape inference knows no com.microsoft op: the fused nodes' outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    for path in (fp32_out, int8_out):
        m = onnx.load(str(path))
        missing = names - {i.name for i in m.graph.initializer}
        if missing:
            raise LoraGraphError(f"{path.name} lost adapter tensors: {sorted(missing)[:3]}")
        _make_overridable(m, names)
        onnx.save(m, str(path))
    return layout


def graph_layout_of(path: Path) -> dict[str, tuple[int, ...]]:
    """The overridable tensors of an adapter-ready model and their shapes."""
    model = onnx.load(str(path))
    inputs = {i.name for i in model.graph.input}
    return {init.name: tuple(init.dims) for init in model.graph.initializer if init.name in inputs}
