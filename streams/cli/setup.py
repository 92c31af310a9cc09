"""The commands that set the loop up: the embedded services, topics, message schemas, the corpus
and the model (`borderline services | topics | schemas | data | model`)."""

from __future__ import annotations

import argparse
import asyncio

from models.errors import BorderlineError
from streams.cli.context import connected, corpus_path
from streams.wire.security import KafkaSecurity
from streams.wire.settings import Settings

__all__ = ["data_command", "model_command", "schemas_command", "services_command", "topics_command"]


def services_command(args: argparse.Namespace, settings: Settings) -> int:
    from streams.embedded.detached import services_down, services_status, services_up

    state = settings.services.state_dir
    if args.action == "up":
        if not settings.embedded:
            raise BorderlineError("external Kafka and Redis are configured: nothing to start")
        s = settings.services
        endpoints = services_up(state, s.tansu_bin, s.redis_bin, s.start_timeout_s)
        print(f"kafka  {endpoints.bootstrap_servers}")
        print(f"redis  {endpoints.redis_url}")
        print(f"state  {state}")
    elif args.action == "down":
        stopped = services_down(state)
        print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    else:
        status = services_status(state)
        if not status:
            print("no embedded services recorded")
            return 1
        for name, st in status.items():
            health = (
                "up" if st["reachable"] else ("alive, not answering" if st["alive"] else "down")
            )
            print(f"{name:<6} pid {st['pid']:<8} port {st['port']:<6} {health}")
        return 0 if all(st["reachable"] for st in status.values()) else 1
    return 0


def topics_command(args: argparse.Namespace, settings: Settings) -> int:
    from streams.wire.topics import ensure_topics

    names = settings.kafka.topics.all()
    if args.action == "list":
        for name in names:
            print(name)
        return 0
    settings = connected(settings)
    kafka = settings.kafka
    assert kafka.bootstrap_servers
    if args.action == "create":
        created = asyncio.run(
            ensure_topics(
                kafka.bootstrap_servers,
                names,
                kafka.partitions,
                kafka.replication_factor,
                security=KafkaSecurity.of(kafka),
            )
        )
        for name in names:
            state = "created" if name in created else "exists"
            print(f"{name:<40} {state}")
    return 0


def schemas_command(args: argparse.Namespace, settings: Settings) -> int:
    from streams.wire.messages import export_schemas

    for path in export_schemas(args.dir):
        print(path)
    return 0


def data_command(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.offline.corpus import fetch_spamassassin

    result = fetch_spamassassin(args.out or settings.data_dir)
    origin = "cached" if result.cached else "fetched"
    print(f"{origin} {result.items} items -> {result.path} (dropped {result.dropped} empty)")
    for group, n in sorted(result.per_group.items()):
        print(f"  {group:<12} {n}")
    return 0


def model_command(args: argparse.Namespace, settings: Settings) -> int:
    from models.manifest import ModelManifest

    if args.action == "show":
        manifest = ModelManifest.read(args.dir or settings.model.dir)
        print(manifest.model_dump_json(indent=2))
        return 0

    from adapters.adapt.bootstrap import bootstrap_model
    from adapters.adapt.training import TrainConfig
    from adapters.labels.dataset import read_jsonl, sample

    items = read_jsonl(corpus_path(settings, args.labels))
    if len(items) < args.train_size + args.holdout_size:
        raise BorderlineError(
            f"{len(items)} labelled items, need --train-size + --holdout-size = "
            f"{args.train_size + args.holdout_size}"
        )
    train_items = sample(items, args.train_size, seed=args.seed)
    holdout = sample(
        items, args.holdout_size, seed=args.seed + 1, exclude={i.item_id for i in train_items}
    )
    config = TrainConfig(
        epochs=args.epochs, seed=args.seed, max_length=args.max_length or settings.model.max_length
    )
    out = args.out or settings.model.dir
    result = bootstrap_model(
        train_items,
        holdout,
        out,
        config=config,
        policy_version=settings.policy.version,
        categories=[settings.policy.category],
    )
    ev = result.manifest.evaluation
    print(f"model {result.manifest.model_version} adapter {result.manifest.adapter_version}")
    print(f"  written to {result.model_dir}")
    print(
        f"  held-out kappa: int8 {ev['kappa_int8']:.3f}, torch {ev['kappa_torch']:.3f}, "
        f"untrained head {ev['kappa_untrained_head']:.3f}"
    )
    parity = ev["int8_vs_torch"]
    print(
        f"  int8 vs torch on {parity['items']} held-out items: decisions agree "
        f"{parity['decision_agreement']:.1%}, max probability difference "
        f"{parity['max_abs_prob_diff']:.4f}"
    )
    return 0
