"""`borderline adapters list | show | register | promote | rollback | audit | keygen`: the registry
for people. Output is plain text for terminals; unknown ids, impossible rollbacks and promotions
the gate did not pass are one-line errors.

A promotion by hand needs the adapter's passed gate report for the active policy; past it only
with ``--force --reason TEXT``, which the registry record marks as forced (workers alert) and the
audit log keeps with the actor (`borderline adapters audit`). A rollback goes to the most recent
earlier adapter that verifies with the configured verify key and loads into the model as a worker
loads it (test-loaded here, from a scratch folder), passing over, and naming, those that do not."""

from __future__ import annotations

import argparse
import getpass
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from adapters.adapt.verdicts import VerdictStore
from adapters.policy.store import PolicyStore
from adapters.registry.artifact import AdapterArtifact, AdapterManifest, ArtifactError
from adapters.registry.audit import AuditEntry, AuditLog
from adapters.registry.keys import SIGNING_KEY_FILE, VERIFY_KEY_FILE, make_key_pair
from adapters.registry.signing import SIGNATURE_FILE, AdapterSignature
from adapters.registry.store import ActiveRecord, AdapterRegistry, RegistryError
from models.manifest import ModelManifest
from models.scorer import Scorer
from streams.service.record import open_journal
from streams.service.trainer_ports import ensure_loaded
from streams.service.trust import adapter_trust
from streams.wire.security import KafkaSecurity, redis_options
from streams.wire.settings import Settings

__all__ = ["adapters_command", "keygen_command", "promote_by_hand"]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or f"{getpass.getuser()}@{socket.gethostname()}"


def _signature_line(files: dict[str, bytes]) -> str:
    raw = files.get(SIGNATURE_FILE)
    if raw is None:
        return "unsigned: workers refuse it (only the trainer signs, once the gate passed)"
    try:
        signed = AdapterSignature.model_validate_json(raw)
    except ValueError:
        return "signature: malformed (workers refuse it)"
    return f"signed with key {signed.key_id}, gate: {signed.gate.get('reason', '?')}"


def _record_line(r: ActiveRecord) -> str:
    frm = f" (was {r.previous})" if r.previous else ""
    action = "promote!" if r.forced else r.action
    head = f"{_when(r.at)}  epoch {r.epoch:<4} {action:<8} {r.adapter_id}{frm}"
    return f"{head}  by {r.actor}: {r.reason}"


def _test_load(
    settings: Settings, registry: AdapterRegistry, scratch: Path
) -> Callable[[str], Awaitable[None]]:
    """What a rollback checks before it names an adapter active: that it loads into this
    deployment's model as a worker would load it (`AdapterFileError` where onnxruntime refuses).
    The model is opened at the first adapter that verifies, so an unreachable Redis is still
    what a rollback without a model folder says first."""
    scorers: list[Scorer] = []

    async def loads(adapter_id: str) -> None:
        if not scorers:
            scorers.append(Scorer.from_dir(settings.model.dir, threads=1))
        await ensure_loaded(scorers[0], adapter_id, registry, settings, into=scratch)

    return loads


async def adapters_command(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    # a rollback goes only where workers would go: adapters that verify with their key
    trust = adapter_trust(settings) if settings.adapters.verify_key_file is not None else None
    registry = AdapterRegistry(redis, settings.redis.key_prefix, trust=trust)
    policy = getattr(args, "policy", None) or settings.policy.version
    if args.action in ("register", "promote", "rollback"):
        assert settings.kafka.bootstrap_servers
        # recorded on the adapter topics too: the registry is rebuilt from them
        async with open_journal(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics,
            actor=_actor(args),
            security=KafkaSecurity.of(settings.kafka),
        ) as journal:
            registry.journal = journal
            return await _run(args, settings, redis, registry, policy)
    return await _run(args, settings, redis, registry, policy)


async def _run(
    args: argparse.Namespace,
    settings: Settings,
    redis: Redis,
    registry: AdapterRegistry,
    policy: str,
) -> int:
    try:
        if args.action == "list":
            active = await registry.active(policy)
            manifests = await registry.adapters()
            if not manifests:
                print("no adapters registered (borderline adapters register DIR)")
                return 0
            print(f"{'':2}{'adapter':<40} {'policy':<8} {'parent':<30} {'created':<19} metrics")
            for m in manifests:
                mark = "* " if active and active.adapter_id == m.adapter_id else "  "
                metrics = ", ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in m.metrics.items()
                )
                print(
                    f"{mark}{m.adapter_id:<40} {m.policy_version:<8} {m.parent_id or '-':<30} "
                    f"{_when(m.created_at)} {metrics}"
                )
            if active is None:
                print(f"(no adapter promoted for policy {policy}: workers serve the base's own)")
        elif args.action == "show":
            manifest = await registry.manifest(args.id)
            print(manifest.model_dump_json(indent=2))
            print(_signature_line(await registry.files(args.id)))
            history = [
                r
                for r in await registry.history(manifest.policy_version)
                if args.id in (r.adapter_id, r.previous)
            ]
            for r in history:
                print(_record_line(r))
        elif args.action == "register":
            base = ModelManifest.read(settings.model.dir, verify=False).model_version
            artifact = AdapterArtifact.load(args.dir, expected_base=base)
            new = await registry.register(artifact)
            state = "registered" if new else "already registered"
            print(f"{state}: {artifact.adapter_id} (policy {artifact.manifest.policy_version})")
        elif args.action == "promote":
            await _promote(args, settings, registry)
        elif args.action == "rollback":
            reason = args.reason or "manual rollback"
            with tempfile.TemporaryDirectory(prefix="borderline-rollback-") as scratch:
                registry.loads = _test_load(settings, registry, Path(scratch))
                record = await registry.rollback(policy, actor=_actor(args), reason=reason)
            print(_record_line(record))
        elif args.action == "audit":
            entries = await AuditLog(redis, settings.redis.key_prefix).entries(args.limit)
            if not entries:
                print("no forced promotions")
            for e in entries:
                print(
                    f"{_when(e.at)}  {e.action}  {e.adapter_id} (policy {e.policy_version}) "
                    f"by {e.actor}: {e.reason} [gate: {e.gate}]"
                )
        return 0
    finally:
        await redis.aclose()


async def _gate_verdict(
    redis: Redis, prefix: str, default_policy: str, manifest: AdapterManifest
) -> tuple[bool, str]:
    """Whether the adapter's gate report passed for the active policy, and what it said."""
    active = await PolicyStore(redis, prefix).active_version() or default_policy
    report = await VerdictStore(redis, prefix).report(manifest.adapter_id)
    if report is None:
        return False, "no gate report"
    if not report.passed:
        return False, f"failed: {report.reason}"
    if report.policy_version != active or manifest.policy_version != active:
        return False, f"passed for policy {report.policy_version}, the active policy is {active}"
    return True, f"passed: {report.reason}"


async def promote_by_hand(
    registry: AdapterRegistry,
    *,
    default_policy: str,
    adapter_id: str,
    actor: str,
    reason: str | None,
    force: bool,
    now: float | None = None,
) -> ActiveRecord:
    """Promote ``adapter_id`` if its gate report passed for the active policy; past the gate only
    with ``force`` and a ``reason``: then the audit log gets the entry first (with the actor,
    the reason and what the gate had said) and the record is marked forced. `RegistryError`
    naming the way out otherwise."""
    redis, prefix = registry.redis, registry.prefix
    manifest = await registry.manifest(adapter_id)
    passed, gate = await _gate_verdict(redis, prefix, default_policy, manifest)
    if not passed and not force:
        raise RegistryError(
            f"adapter {adapter_id} has no passed gate report for the active policy ({gate}): "
            "promote it past the gate only with --force --reason TEXT (audit-logged)"
        )
    if force and not reason:
        raise RegistryError("--force needs --reason TEXT: why the gate is overridden")
    if not passed:
        assert reason is not None
        await AuditLog(redis, prefix).append(
            AuditEntry(
                at=time.time() if now is None else now,
                actor=actor,
                action="force-promote",
                adapter_id=adapter_id,
                policy_version=manifest.policy_version,
                reason=reason,
                gate=gate,
            )
        )
    return await registry.promote(
        adapter_id, actor=actor, reason=reason or "manual promotion", forced=not passed, now=now
    )


async def _promote(args: argparse.Namespace, settings: Settings, registry: AdapterRegistry) -> None:
    manifest = await registry.manifest(args.id)
    local = settings.model.dir
    if (local / "manifest.json").is_file():
        base = ModelManifest.read(local, verify=False).model_version
        if manifest.base_model_version != base:
            raise ArtifactError(
                f"adapter {args.id} was built for base {manifest.base_model_version}, "
                f"the model in {local} is {base}: workers would refuse it"
            )
    record = await promote_by_hand(
        registry,
        default_policy=settings.policy.version,
        adapter_id=args.id,
        actor=_actor(args),
        reason=args.reason,
        force=getattr(args, "force", False),
    )
    print(_record_line(record))


def keygen_command(args: argparse.Namespace) -> int:
    """`borderline adapters keygen --out DIR`: the trainer's signing key pair for production."""
    pair = (args.out / SIGNING_KEY_FILE, args.out / VERIFY_KEY_FILE)
    if args.keep and not args.overwrite and all(p.is_file() for p in pair):
        private, public = pair
        print(f"keeping the key pair in {args.out}")
    else:
        private, public = make_key_pair(args.out, overwrite=args.overwrite)
    if args.public_out is not None:  # e.g. a volume only the workers mount
        args.public_out.mkdir(parents=True, exist_ok=True)
        public = shutil.copy(public, args.public_out / VERIFY_KEY_FILE)
    print(f"signing key (trainer only, mode 0600): {private}")
    print(f"verify key (every worker): {public}")
    print(
        f"set BORDERLINE_ADAPTERS__SIGNING_KEY_FILE={private} for the trainer and "
        f"BORDERLINE_ADAPTERS__VERIFY_KEY_FILE={public} for the workers"
    )
    return 0
