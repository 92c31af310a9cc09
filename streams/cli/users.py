"""`borderline users add | list | disable | token`: the reviewer console's accounts. A user who
reviews is registered in the label store too (on the record, as `borderline reviewers add` does),
so the collector accepts the labels they give in the console; the account itself, a disabling and
a token's hash are on the record as well (`borderline store rebuild` restores them)."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
import time
from collections.abc import Callable
from typing import TextIO

from argon2 import PasswordHasher
from redis.asyncio import Redis

from adapters.labels.store import LabelStore
from models.errors import BorderlineError
from streams.console.audit import AuditLog
from streams.console.keys import ConsoleKeys
from streams.console.users import Role, UserStore
from streams.service.record import open_journal
from streams.wire.security import KafkaSecurity, redis_options
from streams.wire.settings import Settings

__all__ = ["read_password", "users_command"]


def read_password(
    from_stdin: bool, stdin: TextIO, prompt: Callable[[str], str] = getpass.getpass
) -> str | None:
    """The new password: one line of standard input with ``--password-stdin``; otherwise asked
    twice on a terminal; None (token-only user) when there is no terminal to ask on."""
    if from_stdin:
        line = stdin.readline().rstrip("\r\n")
        if not line:
            raise BorderlineError("--password-stdin: standard input held no password")
        return line
    if not stdin.isatty():
        return None
    first = prompt("password: ")
    if first != prompt("again: "):
        raise BorderlineError("the two passwords differ")
    return first


async def users_command(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.redis.url is not None and settings.kafka.bootstrap_servers
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    labels = LabelStore(redis, settings.redis.key_prefix)
    keys = ConsoleKeys(settings.redis.key_prefix)
    users = UserStore(redis, keys, PasswordHasher(), labels)
    audit = AuditLog(redis, keys)  # every change of a user is on the console's audit log
    actor = f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        if args.action == "list":
            for user in await users.list():
                state = "disabled" if user.disabled else "active"
                has = "password" if user.password_hash else "token only"
                print(f"{user.name:<24} {user.role.value:<9} {state:<9} {has}")
            return 0
        password = read_password(args.password_stdin, sys.stdin) if args.action == "add" else None
        async with open_journal(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics,
            actor=actor,
            security=KafkaSecurity.of(settings.kafka),
        ) as journal:
            # every change goes on the record: the reviewer registration, the account, a token
            labels.journal = journal
            users.journal = journal
            if args.action == "add":
                user = await users.add(args.name, Role(args.role), password, now=time.time())
                await audit.append(actor, "user_add", user.name, now=time.time(), detail=args.role)
                login = "password set" if user.password_hash else "no password (API token only)"
                print(f"{user.name}: {user.role.value}, {login}, registered as a reviewer")
            elif args.action == "disable":
                await users.disable(args.name)
                await audit.append(actor, "user_disable", args.name, now=time.time())
                print(f"{args.name}: disabled; their sessions and tokens stop working now")
            else:
                token = await users.new_token(args.name)
                await audit.append(actor, "user_token", args.name, now=time.time())
                print(token)
                print(
                    f"(the API token of {args.name}: shown once, only its hash is kept)",
                    file=sys.stderr,
                )
        return 0
    finally:
        await redis.aclose()
