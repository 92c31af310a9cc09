"""The `borderline` command. Settings are read once here and passed down; a bad argument or any
`BorderlineError` is reported as one readable line (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiokafka.errors import KafkaError
from pydantic import ValidationError
from redis.exceptions import RedisError

from models.errors import BorderlineError
from streams.cli.context import connected, corpus_path
from streams.cli.parser import build_parser
from streams.cli.setup import (
    data_command,
    model_command,
    schemas_command,
    services_command,
    topics_command,
)
from streams.wire.security import KafkaSecurity
from streams.wire.settings import Settings, SettingsError, check_environment, masked

__all__ = ["main"]


def _load_settings() -> Settings:
    try:
        check_environment(os.environ)
        return Settings()
    except SettingsError as exc:
        raise BorderlineError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "__".join(str(p) for p in first["loc"]).upper()
        where = f"BORDERLINE_{where}: " if where else ""
        raise BorderlineError(
            f"invalid settings: {where}{first['msg'].removeprefix('Value error, ')}"
        ) from None


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.service.worker import run_worker

    run_worker(connected(settings), worker_id=args.id, loglevel="debug" if args.verbose else "info")
    return 0


def _cmd_collector(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cli.store import ensure_store
    from streams.service.worker import run_collector

    settings = connected(settings)
    asyncio.run(ensure_store(settings))  # an empty or older store is rebuilt from the record
    run_collector(settings, worker_id=args.id)
    return 0


def _cmd_reviewers(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cli.review import reviewers_command

    return asyncio.run(reviewers_command(args, connected(settings)))


def _cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cli.users import users_command

    return asyncio.run(users_command(args, connected(settings)))


def _cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    from streams.console.serve import serve_console

    return serve_console(connected(settings), host=args.host, port=args.port)


def _cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cli.review import review_command

    return asyncio.run(review_command(args, connected(settings)))


def _cmd_panel(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.offline.simulation import DEFAULT_PANEL, parse_panel
    from streams.demo.panel import load_truth, panel_keys, run_panel_on
    from streams.service.outage import throttled_logs
    from streams.service.retry import Retrying

    settings = connected(settings)
    assert settings.kafka.bootstrap_servers and settings.redis.url
    panel = parse_panel(args.reviewers or DEFAULT_PANEL)
    truth = load_truth(str(corpus_path(settings, args.data)))
    # signing keys for the panel's reviewers (issued, and recorded, where one has none)
    ids = [r.reviewer_id for r in panel]
    keys = asyncio.run(panel_keys(settings, ids, register=args.register, record_as="panel"))
    print(
        f"SIMULATED expert panel: {', '.join(r.reviewer_id for r in panel)} "
        f"({args.per_item or 'as requested'} per item); Ctrl-C to stop"
    )
    with throttled_logs(settings.resilience.log_interval_s):  # an outage said once per interval
        stats = asyncio.run(
            run_panel_on(  # as the console, no more requests for an excluded reviewer
                settings,
                panel,
                truth,
                keys=keys,
                per_item=args.per_item,
                seed=args.seed,
                retry=Retrying.for_process(settings),
            )
        )
    print(f"answered {stats.requests} requests with {stats.labels} labels")
    return 0


def _cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.labels.dataset import read_jsonl, sample
    from streams.demo.replay import replay_items

    settings = connected(settings)
    assert settings.kafka.bootstrap_servers
    items = read_jsonl(corpus_path(settings, args.data))
    if args.items:
        items = sample(items, min(args.items, len(items)), seed=args.seed)
    report = asyncio.run(
        replay_items(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics.items,
            items,
            rate=args.rate,
            security=KafkaSecurity.of(settings.kafka),
        )
    )
    print(f"produced {report.produced} items in {report.seconds:.1f}s ({report.rate:.0f}/s)")
    return 0


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "label-efficiency":
        from streams.bench.efficiency import bench_label_efficiency

        bench_label_efficiency(
            corpus_path(settings, args.data),
            args.json,
            prevalences=args.prevalence,
            seeds=args.seeds,
            quick=args.quick,
            cache_dir=args.cache_dir,
            pool_size=args.pool_size,
        )
        return 0
    if args.action == "adapt":
        from streams.bench.adapt import bench_adapt

        bench_adapt(
            settings,
            json_path=args.json,
            out=args.out,
            items=args.items,
            rate=args.rate,
            seed=args.seed,
            min_eval_items=args.min_eval_items,
        )
        return 0
    if args.action == "chaos":
        from streams.bench.chaos import bench_chaos

        bench_chaos(settings, json_path=args.json, items=args.items, rate=args.rate, seed=args.seed)
        return 0
    if args.action == "console":
        from streams.bench.console import bench_console

        figures = bench_console(settings, reviewers=args.reviewers, items=args.items)
    elif args.action == "swap":
        from streams.bench.swap import bench_swap

        figures = bench_swap(
            settings, items=args.items, workers=args.workers, adapters=args.adapters, seed=args.seed
        )
    else:
        from streams.bench.stream import bench_stream

        figures = bench_stream(
            settings,
            items=args.items,
            rate=args.rate,
            naive_items=args.naive_items,
            seed=args.seed,
            repeat_share=args.repeat_share,
        )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _cmd_adapters(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cli.adapters import adapters_command, keygen_command

    if args.action == "keygen":  # no broker, no Redis
        return keygen_command(args)
    return asyncio.run(adapters_command(args, connected(settings)))


def trainer_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """``settings`` with the `borderline trainer` flags given on the command line applied to
    its gate section (a flag left out keeps the setting)."""
    knobs = {  # flag (its dest) -> gate setting
        "interval": "interval_s",
        "min_new_labels": "min_new_labels",
        "min_kappa": "min_kappa",
        "margin": "margin",
        "min_eval_items": "min_eval_items",
    }
    given = {knob: getattr(args, flag) for flag, knob in knobs.items()}
    given = {knob: value for knob, value in given.items() if value is not None}
    try:
        gate = type(settings.gate).model_validate({**settings.gate.model_dump(), **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = next(f for f, k in knobs.items() if k == first["loc"][0])
        raise BorderlineError(f"--{flag.replace('_', '-')}: {first['msg']}") from None
    return settings.model_copy(update={"gate": gate})


def _cmd_trainer(args: argparse.Namespace, settings: Settings) -> int:
    from streams.service.trainer import TrainerConfig, run_trainer

    settings = connected(trainer_settings(args, settings))
    run_trainer(settings, config=TrainerConfig.from_settings(settings), once=args.once)
    return 0


def _cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cli.policy import policy_command

    return asyncio.run(policy_command(args, connected(settings)))


def _cmd_store(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cli.store import store_command

    return asyncio.run(store_command(args, connected(settings)))


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo.run import run_demo
    from streams.demo.state import DemoOptions

    options = DemoOptions(
        items=args.items,
        rate=args.rate,
        workers=args.workers,
        seed=args.seed,
        out=args.out,
        live=not args.no_live,
        policy_change=not args.no_policy_change,
        change_at=args.change_at,
        min_kappa=args.min_kappa,
        min_eval_items=args.min_eval_items,
        settle_s=args.settle,
        console=args.console,
        **({"panel": args.panel} if args.panel else {}),
    )
    return run_demo(settings, options)


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    """The effective settings (defaults and environment), secrets masked."""
    print(json.dumps(masked(settings), indent=2, sort_keys=True))
    return 0


def _unreachable(exc: BaseException, settings: Settings | None) -> str:
    """One line for a service that did not answer or a path that does not work; the Redis URL
    is shown without its password."""
    if isinstance(exc, RedisError):
        where = "Redis"
        if settings is not None and settings.redis.url is not None:
            url = urlsplit(settings.redis.url.get_secret_value())
            where = f"Redis at {url.hostname}:{url.port or 6379}"
        return f"cannot reach {where}: {exc}"
    if isinstance(exc, KafkaError):
        servers = settings.kafka.bootstrap_servers if settings is not None else None
        return f"cannot reach Kafka at {servers or 'the embedded broker'}: {exc}"
    assert isinstance(exc, OSError)
    if exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    return f"{exc.strerror or exc}"


_COMMANDS = {
    "config": _cmd_config,
    "services": services_command,
    "topics": topics_command,
    "schemas": schemas_command,
    "data": data_command,
    "model": model_command,
    "worker": _cmd_worker,
    "produce": _cmd_produce,
    "collector": _cmd_collector,
    "reviewers": _cmd_reviewers,
    "review": _cmd_review,
    "users": _cmd_users,
    "console": _cmd_console,
    "panel": _cmd_panel,
    "bench": _cmd_bench,
    "adapters": _cmd_adapters,
    "policy": _cmd_policy,
    "store": _cmd_store,
    "trainer": _cmd_trainer,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chatty = args.command in {
        "worker",
        "collector",
        "panel",
        "demo",
        "bench",
        "model",
        "data",
        "trainer",
        "console",
    }
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.INFO if chatty else logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in {"demo", "bench"} and not args.verbose:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)  # group joins: not news here
    settings: Settings | None = None
    try:
        settings = _load_settings()
        return _COMMANDS[args.command](args, settings)
    except BorderlineError as exc:
        print(f"borderline: error: {exc}", file=sys.stderr)
        return 2
    except (RedisError, KafkaError, OSError) as exc:
        print(f"borderline: error: {_unreachable(exc, settings)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("borderline: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
