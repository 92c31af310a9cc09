"""The real corpus and the one real test model, built by `borderline model init` and cached by its
configuration under .borderline/test-cache. The model and integration layers' fixtures
(tests/conftest.py) take them from here; `make test` runs ``python -m tests.model_cache`` in the
background while the unit layer runs, so that a clean clone builds the model on the core the unit
layer leaves idle. A file lock makes every other process (an xdist worker, the fixture) wait for
a build under way and then find it cached."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CACHE", "MODEL_ARGS", "MODEL_SOURCES", "REPO", "corpus_path", "model_path"]

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


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """One process at a time: the first fetches the corpus or builds the model, the others wait,
    then find it cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def corpus_path() -> Path:
    """The full SpamAssassin corpus as JSONL (fetched once into the repo's ignored cache)."""
    from adapters.offline.corpus import fetch_spamassassin

    with _exclusive("corpus"):
        return fetch_spamassassin(REPO / ".borderline" / "data").path


def model_path(corpus: Path) -> Path:
    """A real model made by the CLI, as a user makes it; rebuilt when its inputs change."""
    from models.manifest import ModelManifest

    key_src = json.dumps([MODEL_ARGS, corpus.stat().st_size]).encode()
    for source in MODEL_SOURCES:
        key_src += (REPO / source).read_bytes()
    out = CACHE / f"model-{hashlib.sha256(key_src).hexdigest()[:12]}"
    with _exclusive("model"):
        with contextlib.suppress(Exception):
            ModelManifest.read(out)
            return out
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


if __name__ == "__main__":
    started = time.monotonic()
    try:
        built = model_path(corpus_path())
    except Exception as exc:  # the fixture tries again and reports it in the test session
        print(f"test model not built ({exc}); the test session will build it", file=sys.stderr)
        sys.exit(1)
    print(f"test model {built.name} ready in {time.monotonic() - started:.0f} s")
