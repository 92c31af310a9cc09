"""`borderline adapters` past the gate, on the unit session's real redis-server: a promotion
without a passed gate report is refused in one line and changes nothing; `--force` needs a
reason; a forced promotion is in `adapters audit` with its actor and reason; `adapters keygen`
writes a key pair and never replaces one silently."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import pytest

from adapters.registry.artifact import write_artifact
from adapters.registry.store import AdapterRegistry
from streams.cli.adapters import promote_by_hand
from streams.cli.main import main
from tests.redis_support import redis_client

from .conftest import one_line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registered(redis_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An unsigned, ungated adapter in the registry; the CLI pointed at it (no broker is
    reached: a refusal happens before anything is recorded)."""
    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("BORDERLINE_REDIS__URL", redis_url)
    monkeypatch.setenv("BORDERLINE_REDIS__KEY_PREFIX", prefix)
    artifact = write_artifact(
        tmp_path / "always-benign",
        adapter_id="always-benign",
        params={"w": np.full((2, 2), -9.0, dtype=np.float32)},
        base_model_version="m",
        policy_version="v1",
        labels=["benign", "violating"],
        metrics={"kappa": 0.990},
        now=1.0,
    )

    async def register() -> None:
        async with redis_client(redis_url) as redis:
            await AdapterRegistry(redis, prefix).register(artifact)

    asyncio.run(register())
    return artifact.adapter_id


def _active(redis_url: str, prefix: str) -> object:
    async def read() -> object:
        async with redis_client(redis_url) as redis:
            return await AdapterRegistry(redis, prefix).active("v1")

    return asyncio.run(read())


def test_a_promotion_without_a_passed_gate_report_is_one_line_and_changes_nothing(
    registered: str, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["adapters", "promote", registered, "--reason", "trust me"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "no passed gate report for the active policy (no gate report)" in line
    assert "--force --reason" in line
    assert main(["adapters", "promote", registered, "--force"]) == 2
    assert "--force needs --reason" in one_line(capsys.readouterr().err)
    assert _active(redis_url, prefix) is None


def test_a_forced_promotion_is_in_the_audit_log_with_actor_and_reason(
    registered: str, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["adapters", "audit"]) == 0
    assert capsys.readouterr().out.strip() == "no forced promotions"

    async def force() -> None:
        async with redis_client(redis_url) as redis:
            await promote_by_hand(
                AdapterRegistry(redis, prefix),
                default_policy="v1",
                adapter_id=registered,
                actor="mallory@laptop",
                reason="incident 42",
                force=True,
            )

    asyncio.run(force())
    assert main(["adapters", "audit"]) == 0
    line = one_line(capsys.readouterr().out)
    assert "force-promote  always-benign (policy v1) by mallory@laptop: incident 42" in line
    assert "[gate: no gate report]" in line


def test_keygen_writes_a_pair_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys"
    assert main(["adapters", "keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"BORDERLINE_ADAPTERS__SIGNING_KEY_FILE={out / 'adapter-signing.key'}" in printed
    assert f"BORDERLINE_ADAPTERS__VERIFY_KEY_FILE={out / 'adapter-verify.pub'}" in printed
    before = (out / "adapter-verify.pub").read_bytes()
    assert main(["adapters", "keygen", "--out", str(out)]) == 2
    assert "already holds a key pair" in one_line(capsys.readouterr().err)
    assert (out / "adapter-verify.pub").read_bytes() == before
    assert main(["adapters", "keygen", "--out", str(out), "--overwrite"]) == 0
    assert (out / "adapter-verify.pub").read_bytes() != before


def test_show_says_whether_and_by_which_key_an_adapter_is_signed(
    registered: str, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from adapters.registry.signing import key_id, sign_adapter

    assert main(["adapters", "show", registered]) == 0
    assert "unsigned: workers refuse it" in capsys.readouterr().out
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))

    async def sign(raw: bytes | None) -> None:
        async with redis_client(redis_url) as redis:
            registry = AdapterRegistry(redis, prefix)
            if raw is not None:
                await redis.set(f"{prefix}:adapter:{registered}:signature", raw)
                return
            manifest = (await registry.files(registered))["adapter.json"]
            gate = {"adapter_id": registered, "policy_version": "v1", "passed": True}
            await registry.attach_signature(sign_adapter(manifest, {**gate, "reason": "ok"}, key))

    asyncio.run(sign(None))
    assert main(["adapters", "show", registered]) == 0
    assert f"signed with key {key_id(key.public_key())}, gate: ok" in capsys.readouterr().out
    asyncio.run(sign(b"garbage"))
    assert main(["adapters", "show", registered]) == 0
    assert "signature: malformed" in capsys.readouterr().out


def test_keygen_keep_and_public_out_make_it_a_one_shot_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What docker compose's `adapter-keys` service runs at every start: the pair made once and
    kept, the public key copied where only the workers look."""
    argv = ["adapters", "keygen", "--out", str(tmp_path / "signing")]
    argv += ["--public-out", str(tmp_path / "verify"), "--keep"]
    assert main(argv) == 0
    public = (tmp_path / "verify" / "adapter-verify.pub").read_bytes()
    assert public == (tmp_path / "signing" / "adapter-verify.pub").read_bytes()
    assert not (tmp_path / "verify" / "adapter-signing.key").exists()
    capsys.readouterr()
    assert main(argv) == 0
    assert "keeping the key pair" in capsys.readouterr().out
    assert (tmp_path / "verify" / "adapter-verify.pub").read_bytes() == public
