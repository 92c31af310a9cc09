"""`borderline adapters list | show | register | promote | rollback`: the registry for people.
Output is plain text for terminals; unknown ids and impossible rollbacks are one-line errors."""

from __future__ import annotations

import argparse
import getpass
import socket
import time

from redis.asyncio import Redis

from adapters.registry.artifact import AdapterArtifact, ArtifactError
from adapters.registry.store import ActiveRecord, AdapterRegistry
from models.manifest import ModelManifest
from streams.service.record import open_journal
from streams.wire.settings import Settings

__all__ = ["adapters_command"]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or f"{getpass.getuser()}@{socket.gethostname()}"


def _record_line(r: ActiveRecord) -> str:
    frm = f" (was {r.previous})" if r.previous else ""
    head = f"{_when(r.at)}  epoch {r.epoch:<4} {r.action:<8} {r.adapter_id}{frm}"
    return f"{head}  by {r.actor}: {r.reason}"


async def adapters_command(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    registry = AdapterRegistry(redis, settings.redis.key_prefix)
    policy = getattr(args, "policy", None) or settings.policy.version
    if args.action in ("register", "promote", "rollback"):
        assert settings.kafka.bootstrap_servers
        # recorded on the adapter topics too: the registry is rebuilt from them
        async with open_journal(
            settings.kafka.bootstrap_servers, settings.kafka.topics, actor=_actor(args)
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
            manifest = await registry.manifest(args.id)
            local = settings.model.dir
            if (local / "manifest.json").is_file():
                base = ModelManifest.read(local, verify=False).model_version
                if manifest.base_model_version != base:
                    raise ArtifactError(
                        f"adapter {args.id} was built for base {manifest.base_model_version}, "
                        f"the model in {local} is {base}: workers would refuse it"
                    )
            record = await registry.promote(args.id, actor=_actor(args), reason=args.reason)
            print(_record_line(record))
        elif args.action == "rollback":
            record = await registry.rollback(policy, actor=_actor(args), reason=args.reason)
            print(_record_line(record))
        return 0
    finally:
        await redis.aclose()
