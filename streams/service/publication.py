"""Publishing a policy: validated, recorded in the policy store (atomic, versioned) and announced
on the policy topic, so that every worker and any other consumer follows it. The announcement
carries the whole document and who published it: the policy store is rebuilt from the topic
(`streams.service.rebuild`)."""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from adapters.policy.message import to_message
from adapters.policy.schema import Policy, PolicyError
from adapters.policy.store import PolicyRecord, PolicyStore, Publication
from streams.wire.messages import PolicyUpdate, encode
from streams.wire.settings import Settings

__all__ = ["announce", "policy_message", "publish_policy"]


SEND_TIMEOUT_S = 30.0


async def announce(bootstrap_servers: str, topic: str, message: PolicyUpdate) -> tuple[int, int]:
    """Produce ``message`` keyed by its version; wait until every in-sync replica has it.
    Returns (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", request_timeout_ms=15_000
    )
    try:
        await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
        sent = await asyncio.wait_for(
            producer.send_and_wait(
                topic, value=encode(message), key=message.policy_version.encode()
            ),
            SEND_TIMEOUT_S,
        )
    except (KafkaError, TimeoutError) as exc:
        raise PolicyError(
            f"policy {message.policy_version} is recorded in Redis but could not be announced "
            f"on {topic} at {bootstrap_servers} ({exc!r}): check the broker and that the topic "
            "exists (borderline topics create), then publish the same file again"
        ) from None
    finally:
        await producer.stop()
    return sent.partition, sent.offset


def policy_message(policy: Policy, record: PolicyRecord) -> PolicyUpdate:
    """The announcement of a publication: the policy's wire fields, the whole document and who
    published it, at the store's own time (a replay recognises it by version and time)."""
    return PolicyUpdate.model_validate(
        {
            **to_message(policy, now=record.at),
            "document": json.loads(policy.canonical_json()),
            "actor": record.actor,
        }
    )


async def publish_policy(
    settings: Settings, store: PolicyStore, policy: Policy, actor: str
) -> tuple[Publication, int, int]:
    """Record ``policy`` in Redis, then announce it on the policy topic (Redis first, so that
    publishing the same document again is safe). Returns the publication, partition, offset."""
    assert settings.kafka.bootstrap_servers is not None
    publication = await store.publish(policy, actor=actor, now=time.time())
    message = policy_message(policy, publication.record)
    partition, offset = await announce(
        settings.kafka.bootstrap_servers, settings.kafka.topics.policy_updates, message
    )
    return publication, partition, offset
