"""Console users on a real redis-server: Argon2id hashes, roles, one registry with the label
store, API tokens stored hashed and shown once, disabling that stops sessions and tokens, and
every change on the record, so a store rebuild restores the users."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from redis.asyncio import Redis

from adapters.labels.store import LabelStore
from models.errors import BorderlineError
from streams.cli.users import read_password
from streams.console.keys import ConsoleKeys
from streams.console.users import Role, UserError, UserStore, token_digest
from streams.service.admission import LabelAdmission
from streams.service.rebuild import Rebuilder
from streams.service.record import KafkaJournal
from streams.service.replay import Recorded
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames
from tests.unit.conftest import RunRedis
from tests.unit.streams.console.conftest import FakeRegistry


def _store(redis: Redis, prefix: str, hasher: PasswordHasher) -> tuple[UserStore, FakeRegistry]:
    registry = FakeRegistry()
    return UserStore(redis, ConsoleKeys(prefix), hasher, registry), registry


def test_add_hashes_with_argon2id_and_registers_the_reviewer(
    run_redis: RunRedis, prefix: str, hasher: PasswordHasher
) -> None:
    async def body(redis: Redis) -> None:
        users, registry = _store(redis, prefix, hasher)
        await users.add("alice", Role.REVIEWER, "correct horse", now=1.0)
        await users.add("lena", Role.LEAD, "lead password", now=2.0)
        raw = (await redis.hget(ConsoleKeys(prefix).users, "alice")).decode()
        assert "correct horse" not in raw and "$argon2id$" in raw
        assert registry.reviewers == {"alice", "lena"}
        assert (await users.check_password("alice", "correct horse")).name == "alice"
        assert await users.check_password("alice", "wrong password") is None
        assert await users.check_password("nobody", "correct horse") is None
        assert await users.check_password("Not A Name", "x") is None
        assert [(u.name, u.role) for u in await users.list()] == [
            ("alice", Role.REVIEWER),
            ("lena", Role.LEAD),
        ]
        # changing the role keeps the password and the creation time
        again = await users.add("alice", Role.LEAD, None, now=9.0)
        assert again.is_lead and again.created_at == 1.0
        assert await users.check_password("alice", "correct horse") is not None

    run_redis(body)


def test_bad_names_and_short_passwords_are_refused(
    run_redis: RunRedis, prefix: str, hasher: PasswordHasher
) -> None:
    async def body(redis: Redis) -> None:
        users, registry = _store(redis, prefix, hasher)
        with pytest.raises(UserError, match="invalid user name"):
            await users.add("<script>", Role.REVIEWER, "long enough", now=1.0)
        with pytest.raises(UserError, match="at least 8"):
            await users.add("bob", Role.REVIEWER, "short", now=1.0)
        assert await users.list() == [] and registry.reviewers == set()

    run_redis(body)


def test_tokens_are_stored_hashed_and_stop_when_the_user_is_disabled(
    run_redis: RunRedis, prefix: str, hasher: PasswordHasher
) -> None:
    async def body(redis: Redis) -> None:
        users, _ = _store(redis, prefix, hasher)
        keys = ConsoleKeys(prefix)
        await users.add("alice", Role.REVIEWER, None, now=1.0)
        token = await users.new_token("alice")
        assert token.startswith("blt_") and len(token) > 40
        stored = await redis.hkeys(keys.tokens)
        assert stored == [token_digest(token).encode()]
        assert (await users.by_token(token)).name == "alice"
        assert await users.by_token(token + "x") is None
        # a session the user holds disappears with the disable
        await redis.set(keys.session("abc"), "alice")
        await redis.sadd(keys.user_sessions("alice"), "abc")
        await users.disable("alice")
        assert await users.by_token(token) is None
        assert await redis.hlen(keys.tokens) == 0
        assert not await redis.exists(keys.session("abc"))
        with pytest.raises(UserError, match="disabled"):
            await users.new_token("alice")
        with pytest.raises(UserError, match="no such user"):
            await users.disable("nobody")
        with pytest.raises(UserError, match="no such user"):
            await users.new_token("nobody")

    run_redis(body)


def test_a_disabled_user_cannot_sign_in(
    run_redis: RunRedis, prefix: str, hasher: PasswordHasher
) -> None:
    async def body(redis: Redis) -> None:
        users, _ = _store(redis, prefix, hasher)
        await users.add("alice", Role.REVIEWER, "correct horse", now=1.0)
        await users.disable("alice")
        assert await users.check_password("alice", "correct horse") is None

    run_redis(body)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_read_password() -> None:
    assert read_password(True, io.StringIO("s3cret pass\n")) == "s3cret pass"
    with pytest.raises(BorderlineError, match="held no password"):
        read_password(True, io.StringIO(""))
    assert read_password(False, io.StringIO("ignored")) is None  # no terminal: token-only
    answers = iter(["pw one two", "pw one two"])
    assert read_password(False, _Tty(), lambda _: next(answers)) == "pw one two"
    differ = iter(["a password", "another one"])
    with pytest.raises(BorderlineError, match="differ"):
        read_password(False, _Tty(), lambda _: next(differ))


class RecordingProducer:
    """The record as the broker keeps it: every message sent, in order, read back as a rebuild
    reads it."""

    def __init__(self) -> None:
        self.records: list[Recorded] = []

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> object:
        n = len(self.records)
        self.records.append(Recorded(topic, 0, n, 1_900_000_000_000 + n, value))
        return None


def test_store_rebuild_restores_console_users_from_the_record(
    run_redis: RunRedis, prefix: str, hasher: PasswordHasher
) -> None:
    async def body(redis: Redis) -> None:
        topics = TopicNames()
        producer = RecordingProducer()
        journal = KafkaJournal(producer, topics, actor="ops")
        labels = LabelStore(redis, prefix, journal=journal)
        users = UserStore(redis, ConsoleKeys(prefix), hasher, labels, journal=journal)
        await users.add("alice", Role.REVIEWER, "alice password", now=1.0)
        await users.add("lena", Role.LEAD, "lena password", now=2.0)
        alice_token = await users.new_token("alice")
        await users.add("bob", Role.REVIEWER, None, now=3.0)
        bob_token = await users.new_token("bob")
        await users.disable("bob")
        await users.add("lena", Role.REVIEWER, None, now=4.0)  # a lead no more; same password
        before = await users.list()
        assert all(r.topic == topics.reviewer_events for r in producer.records)
        for secret in [b"alice password", b"lena password", alice_token.encode()]:
            assert not any(secret in (r.value or b"") for r in producer.records)

        fresh = f"{prefix}-rebuilt"  # an empty Redis, then the record replayed into it
        settings = Settings()
        rebuilder = Rebuilder(
            redis,
            fresh,
            topics,
            scratch=Path("/nonexistent"),
            admission=LabelAdmission.build(redis, fresh, settings.review, settings.policy),
            key_secret=b"secret",
        )
        counts = await rebuilder.replay([producer.records])
        assert counts["accounts:recorded"] == 5 and counts["accounts:token"] == 2
        again = UserStore(redis, ConsoleKeys(fresh), hasher, LabelStore(redis, fresh))
        assert await again.list() == before
        assert (await again.check_password("alice", "alice password")) is not None
        lena = await again.check_password("lena", "lena password")
        assert lena is not None and lena.role is Role.REVIEWER
        assert (await again.by_token(alice_token)) is not None
        assert await again.by_token(bob_token) is None  # disabled: the token went with it
        assert await LabelStore(redis, fresh).registered() == {"alice", "bob", "lena"}
        await rebuilder.replay([producer.records])  # a second rebuild changes nothing
        assert await again.list() == before

    run_redis(body)
