"""`borderline users` against a real redis-server: a bad name, a bad role, an unknown user and a
missing password are one line with exit 2, never a traceback, and store nothing; a token needs
the broker (it is recorded), listing does not."""

from __future__ import annotations

import io
import sys

import pytest
import redis as sync_redis

from streams.cli.main import main
from streams.console.keys import ConsoleKeys

from .conftest import one_line


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> sync_redis.Redis:
    monkeypatch.setenv("BORDERLINE_REDIS__URL", redis_url)
    monkeypatch.setenv("BORDERLINE_REDIS__KEY_PREFIX", prefix)
    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    return sync_redis.Redis.from_url(redis_url)


@pytest.mark.parametrize(
    ("argv", "stdin", "says"),
    [
        (
            ["users", "add", "Bad Name", "--role", "reviewer", "--password-stdin"],
            "long pass\n",
            "invalid user name 'Bad Name'",
        ),
        (
            ["users", "add", "bob", "--role", "reviewer", "--password-stdin"],
            "short\n",
            "at least 8 characters",
        ),
        (["users", "add", "bob", "--role", "reviewer", "--password-stdin"], "", "held no password"),
        (["users", "token", "nobody"], "", "no such user: 'nobody'"),
        (["users", "disable", "nobody"], "", "no such user: 'nobody'"),
    ],
)
def test_refusals_are_one_line_and_store_nothing(
    env: sync_redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    says: str,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(argv) == 2
    assert says in one_line(capsys.readouterr().err)
    assert not env.exists(ConsoleKeys(prefix).users)


@pytest.mark.parametrize(
    ("port", "says"), [("-5", "above 0"), ("70000", "up to 65535"), ("abc", "'abc'")]
)
def test_a_bad_console_port_is_one_line(
    port: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["console", f"--port={port}"])
    assert info.value.code == 2
    assert says in one_line(capsys.readouterr().err)


def test_a_bad_role_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["users", "add", "bob", "--role", "admin"])
    assert info.value.code == 2
    assert "invalid choice: 'admin'" in one_line(capsys.readouterr().err)


def test_a_token_needs_the_record_and_listing_does_not(
    env: sync_redis.Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token is recorded on the reviewer-events topic (its hash: `store rebuild` restores it),
    so with the broker unreachable the command says so in one line and prints no token; the
    token printed once and stored hashed, and disabling, are tested on the real broker
    (tests/integration/test_console_browser.py)."""
    keys = ConsoleKeys(prefix)
    env.hset(keys.users, "alice", '{"name": "alice", "role": "reviewer", "created_at": 1.0}')
    assert main(["users", "token", "alice"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "cannot reach Kafka at 127.0.0.1:1" in one_line(out.err)
    assert main(["users", "list"]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "reviewer" in listed and "token only" in listed
