"""onnxruntime's LoRA adapter file format: writing a set of named float32 tensors, reading it
back, and checking that an adapter fits a base model (same tensor names and shapes) before it is
ever used, since a wrong name or dtype would only fail at run time."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.errors import BorderlineError

__all__ = [
    "AdapterFileError",
    "check_fits",
    "read_adapter_file",
    "to_graph_layout",
    "write_adapter_file",
]


class AdapterFileError(BorderlineError):
    """An adapter file that cannot be written, read, or used with this base."""


def to_graph_layout(
    params: Mapping[str, np.ndarray], transposed: Mapping[str, bool]
) -> dict[str, np.ndarray]:
    """peft's tensors as the graph holds them (the exporter pre-transposes MatMul weights)."""
    unknown = sorted(set(params) - set(transposed))
    if unknown:
        raise AdapterFileError(f"tensors unknown to the base's layout: {unknown[:3]}")
    return {
        name: np.ascontiguousarray(a.T if transposed[name] else a, dtype=np.float32)
        for name, a in params.items()
    }


def write_adapter_file(path: Path, params: Mapping[str, np.ndarray]) -> Path:
    """Write ``params`` (graph layout) as an onnxruntime adapter file."""
    # AdapterFormat does not keep the arrays alive: hold them until export_adapter returns.
    arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in params.items()}
    values = {name: ort.OrtValue.ortvalue_from_numpy(a) for name, a in arrays.items()}
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt.export_adapter(str(path))
    del values, arrays
    return path


def read_adapter_file(path: Path) -> dict[str, np.ndarray]:
    try:
        fmt = ort.AdapterFormat.read_adapter(str(path))
        return {name: np.array(v.numpy()) for name, v in fmt.get_parameters().items()}
    except Exception as exc:
        raise AdapterFileError(f"{path} is not a readable adapter file: {exc}") from exc


def check_fits(params: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse an adapter whose tensors do not match the base's overridable inputs."""
    unknown = sorted(set(params) - set(expected))
    missing = sorted(set(expected) - set(params))
    if unknown or missing:
        raise AdapterFileError(
            f"adapter does not fit this base: unknown tensors {unknown[:3]}, missing {missing[:3]}"
        )
    for name, array in params.items():
        if array.dtype != np.float32:
            raise AdapterFileError(f"adapter tensor {name} is {array.dtype}, expected float32")
        if tuple(array.shape) != tuple(expected[name]):
            raise AdapterFileError(
                f"adapter tensor {name} has shape {tuple(array.shape)}, the base expects "
                f"{tuple(expected[name])}"
            )
