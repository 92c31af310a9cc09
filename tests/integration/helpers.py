"""What several integration tests need: a deliberately bad adapter (the bootstrap's with its head
negated), a process's Prometheus samples, waits for what the tests would otherwise sleep
through (a worker serving a given policy or adapter, the expert labels settling), and what a
test that sends labels itself needs: reviewers with signing keys, items recorded as requested;
and the `borderline` command run as an operator runs it, on a test's settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore, ReviewedItem
from adapters.registry.artifact import BOOTSTRAP_ARTIFACT, AdapterArtifact, write_artifact
from models.adapter_file import read_adapter_file
from models.manifest import ModelManifest
from streams.embedded.launcher import WorkerProcess, settings_env
from streams.wire.settings import ReviewSettings, Settings
from tests.waiting import Progress, wait_until, wait_until_async

__all__ = [
    "cli",
    "inverted_adapter",
    "requested",
    "reviewer_keys",
    "samples",
    "served",
    "settle_labels",
    "wait_serving",
]


def cli(settings: Settings, *argv: str) -> str:
    """``borderline *argv`` in its own process on ``settings`` (and no other ``BORDERLINE_*``
    variable); its output, once it exited 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
    env.update(settings_env(settings))
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"borderline {' '.join(argv)}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def inverted_adapter(
    model_dir: Path,
    out: Path,
    adapter_id: str,
    *,
    base: str | None = None,
    policy_version: str = "v1",
) -> AdapterArtifact:
    """The model's bootstrap adapter with its classifier head negated: its probabilities are the
    bootstrap's mirrored, so serving it is visible in the scores and it is a bad adapter for any
    policy the bootstrap was good at. ``base`` claims another base model (to be refused)."""
    manifest = ModelManifest.read(model_dir)
    boot = AdapterArtifact.load(
        model_dir / BOOTSTRAP_ARTIFACT, expected_base=manifest.model_version
    )
    params = read_adapter_file(boot.path)
    for name in ("classifier.weight", "classifier.bias"):
        params[name] = -params[name]
    return write_artifact(
        out,
        adapter_id=adapter_id,
        params=params,
        base_model_version=base or manifest.model_version,
        policy_version=policy_version,
        labels=manifest.labels,
        parent_id=boot.adapter_id,
    )


def samples(process: WorkerProcess | int, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples (labels, value) named ``name`` on a worker process's /metrics (or on the
    metrics endpoint at this port)."""
    port = process if isinstance(process, int) else process.metrics_port
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return [
        (dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def served(process: WorkerProcess) -> dict[str, str]:
    """What a worker says it serves (`borderline_model_info`): model, adapter and policy."""
    found = [labels for labels, value in samples(process, "borderline_model_info") if value]
    return found[0] if found else {}


def wait_serving(process: WorkerProcess, timeout_s: float = 30.0, **expected: str) -> None:
    """Wait until the worker serves what ``expected`` names (``adapter_version=``,
    ``policy_version=``), as its model-info metric says."""
    wanted = ", ".join(f"{k}={v}" for k, v in expected.items())

    def now_serving() -> dict[str, str] | None:
        current = served(process)
        return current if all(current.get(k) == v for k, v in expected.items()) else None

    wait_until(now_serving, timeout_s, 0.2, f"worker {process.worker_id} to serve {wanted}")


async def settle_labels(
    labels: LabelStore, policy: str, *, timeout_s: float, quiet_s: float = 2.0
) -> int:
    """Wait until no review request of ``policy`` is open and the labelled items stopped growing
    for ``quiet_s`` (the collector has stored every label the panel gave); return their count.
    The quiet period is time that must pass: a label still on its way shows only as growth."""
    last = {"count": -1, "since": time.monotonic()}

    async def settling() -> Progress:
        count = len(await labels.labelled_items(policy))
        open_requests = await labels.open_count(policy)
        now = time.monotonic()
        if count != last["count"] or open_requests:
            last.update(count=count, since=now)
        quiet = now - last["since"]
        return Progress(
            not open_requests and quiet >= quiet_s,
            {"labelled": count, "open_requests": open_requests, "quiet_s": round(quiet, 1)},
        )

    await wait_until_async(settling, timeout_s, quiet_s / 4, f"the {policy} labels to settle")
    return int(last["count"])


async def reviewer_keys(
    redis: Redis, prefix: str, reviewers: Sequence[str], *, register: bool = True
) -> dict[str, bytes]:
    """Register ``reviewers`` and give each a signing key under the default key secret (the one
    the test's processes use); their keys."""
    if register:
        await LabelStore(redis, prefix).register_reviewers(reviewers)
    secret = ReviewSettings().key_secret.get_secret_value().encode()
    return await ReviewerKeys(redis, prefix, secret).ensure(reviewers)


async def requested(
    redis: Redis, prefix: str, item_ids: Sequence[str], *, policy: str = "v1"
) -> dict[str, str]:
    """Record a review request for each item, as the curator does; item id -> request id."""
    ids = {item_id: f"rq-test-{item_id}" for item_id in item_ids}
    items = [
        ReviewedItem(i, f"text of {i}", None, 0.5, "uncertain", time.time(), request_id=r)
        for i, r in ids.items()
    ]
    await LabelStore(redis, prefix).record_requests(policy, items)
    return ids
