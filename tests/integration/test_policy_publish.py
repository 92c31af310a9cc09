"""`borderline policy publish` on the real redis-server and broker: it puts a valid
`PolicyUpdate`, keyed by version, on the policy topic, with the fields the YAML document says
(read here with a plain YAML parser, not through the product's schema), again when re-run so that
a failed announcement can be repaired; `show` and `history` read it back; an invalid file changes
nothing. The store itself is tested in tests/unit/adapters/policy/test_store.py."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis

from adapters.policy.schema import Policy, PolicyError, load_policy, parse_policy
from adapters.policy.store import PolicyStore
from streams.cli.policy import policy_command
from streams.service.reader import read_topic
from streams.wire.messages import PolicyUpdate
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics
from tests.redis_support import with_redis

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
V2_FILE = REPO / "deploy" / "policies" / "v2.yaml"
V2 = load_policy(V2_FILE)


def _settings(services: Any, tag: str) -> Settings:
    topics = TopicNames().prefixed(f"t{tag}.")
    return Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": services.bootstrap_servers,
                "topics": topics.model_dump(),
            },
            "redis": {"url": services.redis_url, "key_prefix": f"test-policy-{tag}"},
        }
    )


def _messages(settings: Settings, count: int) -> list[dict[str, Any]]:
    assert settings.kafka.bootstrap_servers
    return asyncio.run(
        read_topic(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics.policy_updates,
            until=lambda m: len(m) >= count,
            timeout_s=20,
        )
    )


def _stored(settings: Settings) -> tuple[Policy | None, int]:
    assert settings.redis.url

    async def read(redis: Redis) -> tuple[Policy | None, int]:
        store = PolicyStore(redis, settings.redis.key_prefix)
        return await store.active(), len(await store.history())

    return with_redis(settings.redis.url.get_secret_value(), read)


def _expected_update(document: dict[str, Any]) -> dict[str, Any]:
    """What the announcement must carry, from the YAML document alone (no product code)."""
    return {
        "policy_version": document["version"],
        "categories": [
            {
                "name": c["name"],
                "definition": c["definition"],
                "block_threshold": c["block_threshold"],
            }
            for c in document["categories"]
        ],
        "review_low": document["review_band"]["low"],
        "review_high": document["review_band"]["high"],
        "examples": [
            {k: e[k] for k in ("text", "label", "note") if e.get(k) is not None}
            for e in document["examples"]
        ],
    }


def test_policy_publish_records_and_announces_a_valid_policy_update(
    services: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(services, uuid.uuid4().hex[:8])
    assert settings.kafka.bootstrap_servers
    topic = settings.kafka.topics.policy_updates
    asyncio.run(ensure_topics(settings.kafka.bootstrap_servers, [topic], partitions=2))
    publish = argparse.Namespace(action="publish", file=V2_FILE, actor="alice")
    document = yaml.safe_load(V2_FILE.read_text())
    assert document["version"] == "v2" and len(document["examples"]) >= 2

    before = time.time()
    assert asyncio.run(policy_command(publish, settings)) == 0
    after = time.time()
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert line.startswith("published policy v2 by alice: violating, review band 0.2-0.8")

    [raw] = _messages(settings, 1)
    assert raw.pop("_key") == "v2"
    raw.pop("_partition")
    PolicyUpdate.model_validate(raw)  # the published schema accepts it
    published_at = raw.pop("published_at")
    assert before <= published_at <= after
    assert raw.pop("schema_version") == 1
    assert raw == _expected_update(document)
    assert _stored(settings) == (V2, 1)

    # re-running is safe: Redis is unchanged, the announcement is made again
    assert asyncio.run(policy_command(publish, settings)) == 0
    assert "was already active" in capsys.readouterr().out
    again = _messages(settings, 2)
    assert [m["_key"] for m in again] == ["v2", "v2"]
    assert again[0]["_partition"] == again[1]["_partition"]  # keyed by version: one partition
    assert _stored(settings) == (V2, 1)

    # show prints the active policy as YAML that publish reads back, its record on top
    show = argparse.Namespace(action="show", version=None)
    assert asyncio.run(policy_command(show, settings)) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# policy v2, active\n# ")
    assert "by alice" in shown.splitlines()[1]
    assert parse_policy(shown, source="shown") == V2

    assert asyncio.run(policy_command(argparse.Namespace(action="history"), settings)) == 0
    [entry] = capsys.readouterr().out.splitlines()
    assert "published" in entry and "v2" in entry and "by alice" in entry


def test_policy_publish_of_an_invalid_file_changes_nothing(
    services: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(services, uuid.uuid4().hex[:8])
    bad = tmp_path / "bad.yaml"
    bad.write_text(V2_FILE.read_text().replace("low: 0.2", "low: 2"))
    publish = argparse.Namespace(action="publish", file=bad, actor="alice")
    with pytest.raises(PolicyError, match=r"bad\.yaml: review_band\.low: Input should be less"):
        asyncio.run(policy_command(publish, settings))
    assert _stored(settings) == (None, 0)
    show = argparse.Namespace(action="show", version=None)
    assert asyncio.run(policy_command(show, settings)) == 1
    assert "no policy published yet" in capsys.readouterr().out
