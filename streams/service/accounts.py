"""Reviewer console accounts in Redis: ``{prefix}:console:users`` (name -> the account, JSON) and
``{prefix}:console:tokens`` (SHA-256 of an API token -> name). The console's user store writes
them and records every change on the reviewer-events topic (`streams.service.record`); a rebuild
from the record (`streams.service.rebuild`) writes them again through `AccountBook`, so console
users, their passwords' hashes, roles, tokens and disabled flags survive a Redis lost."""

from __future__ import annotations

from redis.asyncio import Redis

from streams.wire.messages import ConsoleAccount

__all__ = ["AccountBook", "tokens_key", "users_key"]


def users_key(prefix: str) -> str:
    """
    >>> users_key("bl")
    'bl:console:users'
    """
    return f"{prefix}:console:users"


def tokens_key(prefix: str) -> str:
    return f"{prefix}:console:tokens"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class AccountBook:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.users = users_key(prefix)
        self.tokens = tokens_key(prefix)

    async def put(self, account: ConsoleAccount) -> None:
        """Keep the account as it is now; a disabled one loses its API tokens."""
        await self.redis.hset(self.users, account.name, account.model_dump_json())
        if account.disabled:
            await self.drop_tokens(account.name)

    async def add_token(self, digest: str, name: str) -> None:
        await self.redis.hset(self.tokens, digest, name)

    async def drop_tokens(self, name: str) -> None:
        tokens = await self.redis.hgetall(self.tokens)
        mine = [digest for digest, owner in tokens.items() if _text(owner) == name]
        if mine:
            await self.redis.hdel(self.tokens, *mine)
