"""Console users: a name, a role (``reviewer`` or ``lead``), an Argon2id password hash, API tokens
stored as their SHA-256 (a token is 256 random bits, shown once), and a disabled flag that every
request reads, so a disabled user's sessions and tokens stop working at once.

One registry: a console user who reviews (either role) is registered in the label store as a
reviewer, so the collector accepts their labels (`UserStore.add` does it through the store).
Every account change and token issued is also recorded on the reviewer-events topic when a
journal is given (`streams.service.record`), so `borderline store rebuild` restores users."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel
from redis.asyncio import Redis

from models.errors import BorderlineError
from streams.console.keys import ConsoleKeys, text
from streams.service.accounts import AccountBook
from streams.wire.messages import ConsoleAccount

__all__ = ["Role", "User", "UserError", "UserStore", "token_digest", "valid_name"]

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TOKEN_PREFIX = "blt_"

# KEYS: tokens, users. ARGV: token digest. The token's user record (one round trip per request).
_BY_TOKEN = """
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return false end
return redis.call('HGET', KEYS[2], name)
"""


class UserError(BorderlineError):
    """A user name, role or password that cannot be used."""


class Role(StrEnum):
    REVIEWER = "reviewer"
    LEAD = "lead"


class User(BaseModel):
    name: str
    role: Role
    password_hash: str | None = None
    disabled: bool = False
    created_at: float

    @property
    def is_lead(self) -> bool:
        return self.role is Role.LEAD


class AccountJournal(Protocol):
    """Where account changes are recorded (`streams.service.record.KafkaJournal`)."""

    async def account_changed(self, account: ConsoleAccount) -> None: ...

    async def token_issued(self, name: str, digest: str) -> None: ...


class ReviewerRegistry(Protocol):
    """The label store's reviewer registry (`adapters.labels.store.LabelStore`)."""

    async def register_reviewers(self, reviewer_ids: list[str]) -> int: ...


def valid_name(name: str) -> str:
    """A user name: lower-case letters, digits, ``_ . -``; at most 64.

    >>> valid_name("alice")
    'alice'
    >>> valid_name("Alice Smith")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streams.console.users.UserError: invalid user name 'Alice Smith': use a-z, 0-9, _ . - ...
    """
    if not NAME.match(name):
        raise UserError(f"invalid user name {name!r}: use a-z, 0-9, _ . - (at most 64)")
    return name


def token_digest(token: str) -> str:
    """What is stored of an API token.

    >>> len(token_digest("blt_x"))
    64
    """
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class UserStore:
    redis: Redis
    keys: ConsoleKeys
    hasher: PasswordHasher
    reviewers: ReviewerRegistry
    journal: AccountJournal | None = None
    _dummy: str = field(default="", repr=False)  # the hash checked for unknown users
    _by_token: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._by_token = self.redis.register_script(_BY_TOKEN)
        self.book = AccountBook(self.redis, self.keys.prefix)

    async def get(self, name: str) -> User | None:
        raw = await self.redis.hget(self.keys.users, name)
        return None if raw is None else User.model_validate_json(raw)

    async def _put(self, user: User) -> None:
        account = ConsoleAccount.model_validate(user.model_dump(mode="json"))
        await self.book.put(account)
        if self.journal is not None:
            await self.journal.account_changed(account)

    async def add(self, name: str, role: Role, password: str | None, *, now: float) -> User:
        """Create a user (or change an existing one's role and password) and register them as a
        reviewer in the label store."""
        valid_name(name)
        if password is not None and len(password) < 8:
            raise UserError("a password needs at least 8 characters")
        existing = await self.get(name)
        user = User(
            name=name,
            role=role,
            password_hash=self.hasher.hash(password) if password else None,
            created_at=existing.created_at if existing else now,
        )
        if existing is not None and password is None:
            user = user.model_copy(update={"password_hash": existing.password_hash})
        await self._put(user)
        await self.reviewers.register_reviewers([name])
        return user

    async def list(self) -> list[User]:
        raw = await self.redis.hgetall(self.keys.users)
        return sorted((User.model_validate_json(v) for v in raw.values()), key=lambda u: u.name)

    async def disable(self, name: str) -> User:
        """Disable a user: their sessions and tokens are refused from the next request on."""
        user = await self.get(name)
        if user is None:
            raise UserError(f"no such user: {name!r}")
        user = user.model_copy(update={"disabled": True})
        await self._put(user)  # its tokens go with it
        sessions = self.keys.user_sessions(name)
        digests = [text(d) for d in await self.redis.smembers(sessions)]
        async with self.redis.pipeline(transaction=True) as pipe:
            for digest in digests:
                pipe.delete(self.keys.session(digest))
            pipe.delete(sessions)
            await pipe.execute()
        return user

    async def new_token(self, name: str) -> str:
        """A new API token for ``name`` (shown once; only its SHA-256 is kept)."""
        user = await self.get(name)
        if user is None:
            raise UserError(f"no such user: {name!r}")
        if user.disabled:
            raise UserError(f"user {name!r} is disabled")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = token_digest(token)
        await self.book.add_token(digest, name)
        if self.journal is not None:
            await self.journal.token_issued(name, digest)
        return token

    async def by_token(self, token: str) -> User | None:
        """The enabled user holding ``token``, or None."""
        raw = await self._by_token(
            keys=[self.keys.tokens, self.keys.users], args=[token_digest(token)]
        )
        if not raw:
            return None
        user = User.model_validate_json(raw)
        return None if user.disabled else user

    async def check_password(self, name: str, password: str) -> User | None:
        """The enabled user when the password is theirs, else None (a hash is computed even for
        an unknown user, so timing does not tell which names exist)."""
        user = await self.get(name) if NAME.match(name) else None
        stored = user.password_hash if user is not None else None
        try:
            if stored is None:
                if not self._dummy:
                    self._dummy = self.hasher.hash(secrets.token_hex(16))
                self.hasher.verify(self._dummy, password)
                return None
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        assert user is not None
        return None if user.disabled else user
