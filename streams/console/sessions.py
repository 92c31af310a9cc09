"""Server-side sessions in Redis and login throttling.

A session id is 256 random bits, new at every sign-in; Redis keeps only its SHA-256 with the user
name and the session's CSRF token, expiring after the idle lifetime. Login attempts are counted
per user name and per address over a window; past the limit a sign-in is refused before any
password is checked."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from streams.console.keys import ConsoleKeys

__all__ = ["Session", "SessionStore", "Throttle"]


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    session_id: str
    user: str
    csrf: str

    def csrf_ok(self, sent: str | None) -> bool:
        """Whether a request's CSRF token is this session's (constant-time).

        >>> s = Session("sid", "alice", "tok")
        >>> s.csrf_ok("tok"), s.csrf_ok("nope"), s.csrf_ok(None)
        (True, False, False)
        """
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


@dataclass
class SessionStore:
    redis: Redis
    keys: ConsoleKeys
    ttl_s: int

    async def create(self, user: str) -> Session:
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32))
        digest = _digest(session.session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.session(digest), mapping={"user": user, "csrf": session.csrf})
            pipe.expire(self.keys.session(digest), self.ttl_s)
            pipe.sadd(self.keys.user_sessions(user), digest)
            await pipe.execute()
        return session

    async def get(self, session_id: str | None) -> Session | None:
        """The live session, its idle lifetime renewed; None for an unknown or expired id."""
        if not session_id:
            return None
        key = self.keys.session(_digest(session_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.expire(key, self.ttl_s)
            raw, _ = await pipe.execute()
        if not raw:
            return None
        return Session(session_id, raw[b"user"].decode(), raw[b"csrf"].decode())

    async def end(self, session: Session) -> None:
        digest = _digest(session.session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.session(digest))
            pipe.srem(self.keys.user_sessions(session.user), digest)
            await pipe.execute()


@dataclass
class Throttle:
    """Failed sign-ins per user and per address in a fixed window."""

    redis: Redis
    keys: ConsoleKeys
    attempts: int
    window_s: int

    def _keys(self, user: str, address: str) -> list[str]:
        user_key = hashlib.sha256(user.encode()).hexdigest()[:32]  # any text: keep keys tame
        return [self.keys.throttle("user", user_key), self.keys.throttle("addr", address)]

    async def blocked(self, user: str, address: str) -> bool:
        counts = await self.redis.mget(self._keys(user, address))
        return any(c is not None and int(c) >= self.attempts for c in counts)

    async def failed(self, user: str, address: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in self._keys(user, address):
                pipe.incr(key)
                pipe.expire(key, self.window_s, nx=True)
            await pipe.execute()

    async def succeeded(self, user: str, address: str) -> None:
        await self.redis.delete(self._keys(user, address)[0])
