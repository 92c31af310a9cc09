"""Session fixtures shared by the integration and model tests: the real embedded broker and
redis-server (started by the same launcher the demo uses), the real corpus, and one real model
built by `borderline model init` and cached by its configuration."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".borderline" / "test-cache"

# The test model: small enough to build in about a minute on 2 cores, real enough to matter.
MODEL_ARGS = ["--train-size", "240", "--holdout-size", "200", "--epochs", "3", "--seed", "7"]
# Everything that decides what `model init` writes: a change to any of them rebuilds the cached
# model, so a regression in the exported graph cannot hide behind a stale cache.
MODEL_SOURCES = sorted(
    str(path.relative_to(REPO))
    for path in [
        *(REPO / "models").rglob("*.py"),
        REPO / "adapters" / "adapt" / "bootstrap.py",
        REPO / "adapters" / "adapt" / "training.py",
        REPO / "adapters" / "registry" / "artifact.py",
        REPO / "adapters" / "labels" / "dataset.py",
        REPO / "adapters" / "labels" / "agreement.py",
    ]
)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from streams.embedded.services import EmbeddedServices

    state = tmp_path_factory.mktemp("services")
    with EmbeddedServices(state_dir=state) as endpoints:
        yield endpoints


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The full SpamAssassin corpus as JSONL (fetched once into the repo's ignored cache)."""
    from adapters.offline.corpus import fetch_spamassassin

    return fetch_spamassassin(REPO / ".borderline" / "data").path


@pytest.fixture(scope="session")
def model_dir(corpus: Path) -> Path:
    """A real model made by the CLI, as a user makes it; rebuilt when its inputs change."""
    from models.manifest import ModelManifest

    key_src = json.dumps([MODEL_ARGS, corpus.stat().st_size]).encode()
    for source in MODEL_SOURCES:
        key_src += (REPO / source).read_bytes()
    out = CACHE / f"model-{hashlib.sha256(key_src).hexdigest()[:12]}"
    try:
        ModelManifest.read(out)
        return out
    except Exception:
        pass
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "streams.cli",
        "model",
        "init",
        "--labels",
        str(corpus),
        "--out",
        str(out),
        *MODEL_ARGS,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"model init failed:\n{done.stdout}\n{done.stderr}"
    (out / "init-output.txt").write_text(done.stdout)
    return out
