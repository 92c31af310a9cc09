"""The record: what Redis holds that the topics would not otherwise carry, written to topics as it
changes, so that `borderline store rebuild` can rebuild Redis from Kafka alone.

`KafkaJournal` is the `ReviewerJournal` of the label store, the `KeyJournal` of reviewers' keys and
the `RegistryJournal` of the adapter registry: reviewer registrations, clearances and key nonces
(never a key), and the reviewer console's accounts and API tokens (a password's Argon2id hash and a
token's SHA-256, never either) go to the reviewer-events topic, adapter registrations (manifest and
file, base64) to the adapter-registrations topic, and every change of the active adapter (the
registry's own record: its time and epoch) to the adapter-activations topic (the adapter-events
topic stays the trainer's announcements). Policies are recorded by `streams.service.publication`
(the whole document, on the policy-records topic). Labels and review requests are on their topics
already.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from aiokafka import AIOKafkaProducer

from adapters.registry.artifact import ADAPTER_FILE, MANIFEST_FILE, AdapterManifest
from adapters.registry.signing import SIGNATURE_FILE
from adapters.registry.store import ActiveRecord
from streams.wire.messages import (
    AdapterActivated,
    AdapterRegistered,
    ConsoleAccount,
    ReviewerEvent,
    encode,
)
from streams.wire.security import PLAINTEXT, KafkaSecurity
from streams.wire.topics import TopicNames

__all__ = ["KafkaJournal", "Producer", "activation", "open_journal"]

SEND_TIMEOUT_MS = 30_000
# an adapter registration carries the file (~400 KB of base64): above aiokafka's 1 MB default
# request limit only with a very large adapter; the broker's own limit still applies
MAX_REQUEST_BYTES = 4 * 1024 * 1024


class Producer(Protocol):
    """What the journal needs of a Kafka producer (aiokafka's `send_and_wait`)."""

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> object: ...


def activation(record: ActiveRecord) -> AdapterActivated:
    """The message of a registry change: the registry's own record, time and epoch included (so
    a replay recognises a change that is already in the store).

    >>> r = ActiveRecord(adapter_id="a2", previous="a3", epoch=3, action="rollback",
    ...                  actor="ops", reason="bad", at=5.0, policy_version="v1")
    >>> m = activation(r)
    >>> (m.action, m.adapter_id, m.previous, m.epoch, m.at)
    ('rollback', 'a2', 'a3', 3, 5.0)
    """
    # ``forced`` (a promotion by hand past the gate) is Redis's view only: the audit log says it
    return AdapterActivated.model_validate(record.model_dump(exclude={"forced"}))


class KafkaJournal:
    """Records reviewer and adapter-registry changes on their topics (acks=all, awaited)."""

    def __init__(
        self,
        producer: Producer,
        topics: TopicNames,
        *,
        actor: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.actor = actor
        self.clock = clock

    async def reviewers_added(self, reviewer_ids: Sequence[str]) -> None:
        await self._reviewer_event("added", reviewer_ids)

    async def reviewer_cleared(self, reviewer_id: str) -> None:
        await self._reviewer_event("cleared", [reviewer_id])

    async def reviewer_key_issued(self, reviewer_id: str, nonce: str) -> None:
        await self._reviewer_event("key_issued", [reviewer_id], key_nonce=nonce)

    async def account_changed(self, account: ConsoleAccount) -> None:
        """A console account made, changed or disabled (its password's hash, never the
        password)."""
        await self._reviewer_event("account", [account.name], account=account)

    async def token_issued(self, name: str, digest: str) -> None:
        """An API token issued to a console user (its SHA-256, never the token)."""
        await self._reviewer_event("token_issued", [name], token_sha256=digest)

    async def _reviewer_event(
        self, event: str, reviewer_ids: Sequence[str], **fields: object
    ) -> None:
        message = ReviewerEvent.model_validate(
            {
                "event": event,
                "reviewer_ids": list(reviewer_ids),
                **fields,
                "actor": self.actor,
                "at": self.clock(),
            }
        )
        await self.producer.send_and_wait(
            self.topics.reviewer_events, encode(message), key=reviewer_ids[0].encode()
        )

    async def adapter_registered(
        self, manifest: AdapterManifest, files: Mapping[str, bytes]
    ) -> None:
        data = files[ADAPTER_FILE]
        message = AdapterRegistered(
            adapter_id=manifest.adapter_id,
            policy_version=manifest.policy_version,
            manifest_json=files[MANIFEST_FILE].decode(),
            file_b64=base64.b64encode(data).decode(),
            file_sha256=hashlib.sha256(data).hexdigest(),
            signature_json=files[SIGNATURE_FILE].decode() if SIGNATURE_FILE in files else None,
            actor=self.actor or manifest.created_by,
            at=self.clock(),
        )
        await self.producer.send_and_wait(
            self.topics.adapter_registrations, encode(message), key=manifest.adapter_id.encode()
        )

    async def adapter_changed(self, record: ActiveRecord) -> None:
        await self.producer.send_and_wait(
            self.topics.adapter_activations,
            encode(activation(record)),
            key=record.policy_version.encode(),
        )


class _StartedOnUse:
    """An aiokafka producer started on its first send: a command records after Redis took the
    change, so an unreachable Redis is reported as such, before any broker is contacted."""

    def __init__(self, bootstrap_servers: str, security: KafkaSecurity) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.security = security
        self.producer: AIOKafkaProducer | None = None

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> object:
        if self.producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                acks="all",
                request_timeout_ms=SEND_TIMEOUT_MS,
                max_request_size=MAX_REQUEST_BYTES,
                **self.security.options(),
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self.producer = producer
        return await self.producer.send_and_wait(topic, value, key=key)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


@asynccontextmanager
async def open_journal(
    bootstrap_servers: str,
    topics: TopicNames,
    *,
    actor: str = "",
    security: KafkaSecurity = PLAINTEXT,
) -> AsyncIterator[KafkaJournal]:
    """A journal over a producer of its own (started when first needed, stopped on the way
    out): for commands."""
    producer = _StartedOnUse(bootstrap_servers, security)
    try:
        yield KafkaJournal(producer, topics, actor=actor)
    finally:
        await producer.stop()
