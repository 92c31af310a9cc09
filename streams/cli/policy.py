"""`borderline policy publish FILE | show | history`: policy versions for people.

``publish`` validates the document, records it in Redis (the active version, the history) and
announces it as a `PolicyUpdate` on the policy topic, keyed by version, waiting for the broker's
acknowledgement from every in-sync replica. Redis comes first: if the announcement fails, running
the same command again is safe (the store sees the same document and changes nothing) and
announces it again. ``show`` prints a policy as YAML that ``publish`` reads back, its publication
record as comments on top.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import time
from typing import Any

import yaml
from redis.asyncio import Redis

from adapters.policy.schema import Policy, PolicyError, load_policy
from adapters.policy.store import PolicyRecord, PolicyStore
from streams.service.publication import publish_policy
from streams.wire.security import redis_options
from streams.wire.settings import Settings

__all__ = ["policy_command"]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or f"{getpass.getuser()}@{socket.gethostname()}"


def _record_line(r: PolicyRecord) -> str:
    was = f" (was {r.previous})" if r.previous else ""
    return f"{_when(r.at)}  {r.action:<11} {r.version}{was}  by {r.actor}  sha256 {r.sha256[:12]}"


def _summary(policy: Policy) -> str:
    band = policy.review_band
    audit = f", audit {policy.audit_rate:g}" if policy.audit_rate is not None else ""
    return (
        f"{', '.join(policy.category_names)}, review band {band.low:g}-{band.high:g}{audit}, "
        f"{len(policy.examples)} example(s)"
    )


def _as_yaml(policy: Policy) -> str:
    doc: dict[str, Any] = policy.model_dump(mode="json", exclude_none=True)
    if not doc.get("examples"):
        doc.pop("examples", None)
    dumped: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    return dumped


async def policy_command(args: argparse.Namespace, settings: Settings) -> int:
    """``args.action``: ``publish`` (``args.file``, optional ``args.actor``), ``show`` (optional
    ``args.version``) or ``history``."""
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    store = PolicyStore(redis, settings.redis.key_prefix)
    try:
        if args.action == "publish":
            policy = load_policy(args.file)  # before any connection: a bad file touches nothing
            publication, partition, offset = await publish_policy(
                settings, store, policy, _actor(args)
            )
            record = publication.record
            topic = settings.kafka.topics.policy_updates
            if publication.changed:
                was = f" (was {record.previous})" if record.previous else ""
                head = f"{record.action} policy {policy.version}{was} by {record.actor}"
            else:
                head = (
                    f"policy {policy.version} was already active (published {_when(record.at)} "
                    f"by {record.actor}), announced again"
                )
            print(f"{head}: {_summary(policy)} -> {topic} [{partition}] @ {offset}")
        elif args.action == "show":
            version = getattr(args, "version", None) or await store.active_version()
            if version is None:
                print("no policy published yet (borderline policy publish FILE)")
                return 1
            policy = await store.get(version)
            active = await store.active_version()
            found = await store.record(version)
            state = "active" if version == active else f"not active (active: {active})"
            print(f"# policy {version}, {state}")
            if found is not None:
                print(f"# {_record_line(found)}")
            print(_as_yaml(policy), end="")
        elif args.action == "history":
            records = await store.history()
            if not records:
                print("no policy published yet (borderline policy publish FILE)")
            for r in records:
                print(_record_line(r))
        else:
            raise PolicyError(f"unknown policy action {args.action!r}")
        return 0
    finally:
        await redis.aclose()
