"""Publishing a policy: validated, recorded in the policy store (atomic, versioned) and announced
on the policy topic, so that every worker and any other consumer follows it. The publication is
also recorded, with the whole document and who published it, on the policy-records topic: the
policy store is rebuilt from it (`streams.service.rebuild`)."""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from adapters.policy.message import to_message
from adapters.policy.schema import Policy, PolicyError
from adapters.policy.store import PolicyRecord, PolicyStore, Publication
from streams.wire.messages import PolicyRecorded, PolicyUpdate, encode
from streams.wire.security import PLAINTEXT, KafkaSecurity
from streams.wire.settings import Settings

__all__ = ["announce", "policy_record", "publish_policy"]


SEND_TIMEOUT_S = 30.0


async def announce(
    bootstrap_servers: str,
    messages: list[tuple[str, bytes, PolicyUpdate | PolicyRecorded]],
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> tuple[int, int]:
    """Produce each (topic, key, message) in turn; wait until every in-sync replica has each.
    Returns the (partition, offset) of the last."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        request_timeout_ms=15_000,
        **security.options(),
    )
    topic = messages[0][0]
    try:
        await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
        for topic, key, message in messages:
            sent = await asyncio.wait_for(
                producer.send_and_wait(topic, value=encode(message), key=key), SEND_TIMEOUT_S
            )
    except (KafkaError, TimeoutError) as exc:
        raise PolicyError(
            f"policy {messages[0][1].decode()} is recorded in Redis but could not be announced "
            f"on {topic} at {bootstrap_servers} ({exc!r}): check the broker and that the topic "
            "exists (borderline topics create), then publish the same file again"
        ) from None
    finally:
        await producer.stop()
    return sent.partition, sent.offset


def policy_record(policy: Policy, record: PolicyRecord) -> PolicyRecorded:
    """The record of a publication: the store's own record (its time: a replay recognises it by
    version and time) with the whole document."""
    return PolicyRecorded(
        policy_version=policy.version,
        document=json.loads(policy.canonical_json()),
        sha256=record.sha256,
        action=record.action,
        previous=record.previous,
        actor=record.actor,
        at=record.at,
    )


async def publish_policy(
    settings: Settings, store: PolicyStore, policy: Policy, actor: str
) -> tuple[Publication, int, int]:
    """Record ``policy`` in Redis, then announce it on the policy topic (Redis first, so that
    publishing the same document again is safe). Returns the publication, partition, offset."""
    assert settings.kafka.bootstrap_servers is not None
    publication = await store.publish(policy, actor=actor, now=time.time())
    message = PolicyUpdate.model_validate(to_message(policy, now=publication.record.at))
    topics, key = settings.kafka.topics, policy.version.encode()
    partition, offset = await announce(
        settings.kafka.bootstrap_servers,
        [
            (topics.policy_records, key, policy_record(policy, publication.record)),
            (topics.policy_updates, key, message),
        ],
        security=KafkaSecurity.of(settings.kafka),
    )
    return publication, partition, offset
