"""Every topic name of the loop, in one place, named for the data they carry.

Dead-letter topics are the source topic's name with a ``.dlq`` suffix. All names are configurable
(``BORDERLINE_KAFKA__TOPICS__DECISIONS=...``). `ensure_topics` creates every topic with its
partition count before any worker joins: a faust worker is never assigned a topic that did not
exist when its group formed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import BaseModel

from models.errors import BorderlineError
from streams.wire.security import PLAINTEXT, KafkaSecurity

__all__ = ["DLQ_SUFFIX", "TopicError", "TopicNames", "ensure_topics"]

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"


class TopicError(BorderlineError):
    """Topics could not be created or checked."""


class TopicNames(BaseModel):
    items: str = "moderation.item.received"
    decisions: str = "moderation.item.scored"
    review_requests: str = "moderation.review.requested"
    review_labels: str = "moderation.review.labeled"
    policy_updates: str = "moderation.policy.published"
    adapter_events: str = "moderation.adapter.changed"
    # the record the Redis store is rebuilt from (`borderline store rebuild`)
    reviewer_events: str = "moderation.reviewer.changed"
    policy_records: str = "moderation.policy.recorded"
    adapter_registrations: str = "moderation.adapter.registered"
    adapter_activations: str = "moderation.adapter.activated"

    @property
    def items_dlq(self) -> str:
        return self.items + DLQ_SUFFIX

    @property
    def review_labels_dlq(self) -> str:
        return self.review_labels + DLQ_SUFFIX

    def all(self) -> list[str]:
        """Every topic the loop uses, dead-letter topics included."""
        return [
            self.items,
            self.decisions,
            self.review_requests,
            self.review_labels,
            self.policy_updates,
            self.adapter_events,
            self.reviewer_events,
            self.policy_records,
            self.adapter_registrations,
            self.adapter_activations,
            self.items_dlq,
            self.review_labels_dlq,
        ]

    def prefixed(self, prefix: str) -> TopicNames:
        """A copy with every name prefixed: tests give each case its own topics."""
        data = {name: prefix + value for name, value in self.model_dump().items()}
        return TopicNames(**data)


async def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    partitions: int,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Idempotent."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **security.options()
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            new = [NewTopic(t, partitions, replication_factor) for t in missing]
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(new)
        # wait until the broker reports them all, with their partitions
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            existing = set(await admin.list_topics())
            if all(t in existing for t in topics):
                break
            if asyncio.get_running_loop().time() > deadline:
                absent = sorted(set(topics) - existing)
                raise TopicError(f"topics not visible after {timeout_s:.0f}s: {absent}")
            await asyncio.sleep(0.1)
        if missing:
            log.info("created topics %s with %d partitions", missing, partitions)
        return missing
    except KafkaError as exc:
        raise TopicError(f"cannot create topics on {bootstrap_servers}: {exc!r}") from exc
    finally:
        await admin.close()
