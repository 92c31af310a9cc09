"""The `borderline` command. Settings are read once here and passed down; a bad argument or any
`BorderlineError` is reported as one readable line (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from models.errors import BorderlineError
from streams.settings import Settings

__all__ = ["main"]

log = logging.getLogger("borderline")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def _share(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {value}")
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="borderline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    services = sub.add_parser("services", help="the embedded broker and Redis")
    services.add_argument("action", choices=["up", "down", "status"])

    topics = sub.add_parser("topics", help="create every topic with its partitions")
    topics.add_argument("action", choices=["create", "list"])

    schemas = sub.add_parser("schemas", help="message JSON Schemas")
    schemas_sub = schemas.add_subparsers(dest="action", required=True, parser_class=_Parser)
    export = schemas_sub.add_parser("export", help="write one JSON Schema file per message")
    export.add_argument("dir", type=Path)

    data = sub.add_parser("data", help="corpora")
    data_sub = data.add_subparsers(dest="action", required=True, parser_class=_Parser)
    fetch = data_sub.add_parser("fetch", help="fetch and convert a corpus to JSONL")
    fetch.add_argument("corpus", choices=["spamassassin"])
    fetch.add_argument("--out", type=Path, default=None, help="folder (default: data cache)")

    model = sub.add_parser("model", help="the classifier")
    model_sub = model.add_subparsers(dest="action", required=True, parser_class=_Parser)
    init = model_sub.add_parser("init", help="train, export, quantise and verify a first model")
    init.add_argument(
        "--labels", type=_existing_file, default=None, help="JSONL with text and label"
    )
    init.add_argument("--out", type=Path, default=None, help="model folder (default: settings)")
    init.add_argument("--train-size", type=_positive_int, default=300)
    init.add_argument("--holdout-size", type=_positive_int, default=300)
    init.add_argument("--epochs", type=_positive_int, default=3)
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--max-length", type=_positive_int, default=None)
    show = model_sub.add_parser("show", help="print the model's manifest")
    show.add_argument("--dir", type=Path, default=None)

    worker = sub.add_parser("worker", help="run a classify worker")
    worker.add_argument("--id", default=None, help="worker id in decisions (default host-pid)")

    collector = sub.add_parser("collector", help="run the label collector")
    collector.add_argument("--id", default=None)

    reviewers = sub.add_parser("reviewers", help="registered expert reviewers")
    reviewers_sub = reviewers.add_subparsers(dest="action", required=True, parser_class=_Parser)
    r_add = reviewers_sub.add_parser("add", help="register reviewer ids")
    r_add.add_argument("ids", nargs="+")
    reviewers_sub.add_parser("list", help="reviewers and whether their labels count")
    r_clear = reviewers_sub.add_parser("clear", help="count an excluded reviewer's labels again")
    r_clear.add_argument("id")

    review = sub.add_parser("review", help="the review queue and expert agreement")
    review_sub = review.add_subparsers(dest="action", required=True, parser_class=_Parser)
    stats = review_sub.add_parser("stats", help="queue, budget and agreement tables")
    stats.add_argument("--policy", default=None)

    panel = sub.add_parser("panel", help="SIMULATION: answer review requests from ground truth")
    panel.add_argument("--data", type=_existing_file, default=None, help="labelled JSONL")
    panel.add_argument("--reviewers", default=None, help="id:error_rate[:delay_s],...")
    panel.add_argument("--per-item", type=_positive_int, default=2)
    panel.add_argument("--seed", type=int, default=0)
    panel.add_argument("--register", action="store_true", help="register the simulated ids")

    produce = sub.add_parser("produce", help="replay labelled JSONL as live items")
    produce.add_argument("--data", type=_existing_file, default=None)
    produce.add_argument("--items", type=_positive_int, default=None)
    produce.add_argument("--rate", type=_positive_float, default=None, help="items per second")
    produce.add_argument("--seed", type=int, default=0)

    bench = sub.add_parser("bench", help="benchmarks that print figures and write JSON")
    bench_sub = bench.add_subparsers(dest="action", required=True, parser_class=_Parser)
    stream = bench_sub.add_parser("stream", help="stream vs bare scorer vs a naive peer")
    stream.add_argument("--items", type=_positive_int, default=1000)
    stream.add_argument("--json", type=Path, default=None)
    stream.add_argument("--rate", type=_positive_float, default=None, help="latency run load")
    stream.add_argument("--naive-items", type=_positive_int, default=200)
    stream.add_argument("--seed", type=int, default=0)

    adapters = sub.add_parser("adapters", help="the adapter registry")
    adapters_sub = adapters.add_subparsers(dest="action", required=True, parser_class=_Parser)
    adapters_sub.add_parser("list", help="registered adapters; * marks the active one")
    a_show = adapters_sub.add_parser("show", help="an adapter's manifest and history")
    a_show.add_argument("id")
    a_register = adapters_sub.add_parser("register", help="store an adapter folder in Redis")
    a_register.add_argument("dir", type=Path)
    a_promote = adapters_sub.add_parser("promote", help="make an adapter active (all workers)")
    a_promote.add_argument("id")
    a_promote.add_argument("--reason", default="manual promotion")
    a_rollback = adapters_sub.add_parser("rollback", help="restore the previous adapter")
    a_rollback.add_argument("--policy", default=None, help="policy version (default: settings)")
    a_rollback.add_argument("--reason", default="manual rollback")
    for p in (a_promote, a_rollback):
        p.add_argument("--actor", default=None, help="who (default: $USER@host)")

    swap = bench_sub.add_parser("swap", help="live adapter swaps: latency, throughput, memory")
    swap.add_argument("--items", type=_positive_int, default=1000)
    swap.add_argument("--workers", type=_positive_int, default=2)
    swap.add_argument("--adapters", type=_positive_int, default=20)
    swap.add_argument("--json", type=Path, default=None)
    swap.add_argument("--seed", type=int, default=0)

    eff = bench_sub.add_parser("label-efficiency", help="expert labels each strategy needs")
    eff.add_argument("--data", type=_existing_file, default=None, help="JSONL with text, label")
    eff.add_argument("--json", type=Path, default=Path("out/label-efficiency.json"))
    eff.add_argument("--prevalence", type=_positive_float, action="append", default=None)
    eff.add_argument("--seeds", type=_positive_int, default=None, help="default 3 (quick: 1)")
    eff.add_argument("--pool-size", type=_positive_int, default=None)
    eff.add_argument("--cache-dir", type=Path, default=Path(".borderline/cache"))
    eff.add_argument("--quick", action="store_true", help="tiny sizes, 1 seed, for tests")

    adapt = bench_sub.add_parser("adapt", help="policy v2: labels and seconds to promotion")
    adapt.add_argument("--json", type=Path, default=Path("out/bench-adapt.json"))
    adapt.add_argument("--out", type=Path, default=Path("out/bench-adapt"), help="demo report")
    adapt.add_argument("--items", type=_positive_int, default=1500)
    adapt.add_argument("--rate", type=_positive_float, default=8.0, help="items per second")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--min-eval-items", type=_positive_int, default=50)

    trainer = sub.add_parser("trainer", help="train, gate and promote adapters as labels arrive")
    trainer.add_argument("--interval", type=_positive_float, default=15.0, help="seconds")
    trainer.add_argument("--min-new-labels", type=_positive_int, default=100)
    trainer.add_argument("--min-kappa", type=float, default=0.7)
    trainer.add_argument("--margin", type=float, default=0.02)
    trainer.add_argument("--min-eval-items", type=_positive_int, default=50)
    trainer.add_argument("--once", action="store_true", help="one forced round, then exit")

    policy = sub.add_parser("policy", help="versioned moderation policies")
    policy_sub = policy.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p_publish = policy_sub.add_parser("publish", help="validate, record and announce a policy")
    p_publish.add_argument("file", type=_existing_file)
    p_publish.add_argument("--actor", default=None, help="who (default: $USER@host)")
    p_show = policy_sub.add_parser("show", help="the active policy (or --version) as YAML")
    p_show.add_argument("--version", default=None)
    policy_sub.add_parser("history", help="one line per publication")

    demo = sub.add_parser("demo", help="the whole loop on the real corpus, with one command")
    demo.add_argument("--items", type=_positive_int, default=1500, help="items in the stream")
    demo.add_argument("--rate", type=_positive_float, default=8.0, help="items per second")
    demo.add_argument("--workers", type=_positive_int, default=2, help="classify workers")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="report folder")
    demo.add_argument("--no-live", action="store_true", help="plain log lines, for CI and pipes")
    demo.add_argument(
        "--no-policy-change", action="store_true", help="do not publish policy v2 partway"
    )
    demo.add_argument(
        "--change-at", type=_share, default=0.25, help="share of the stream before v2 (0-1)"
    )
    demo.add_argument(
        "--panel", default=None, help="SIMULATED reviewers id:error_rate[:delay_s],..."
    )
    demo.add_argument("--min-kappa", type=float, default=0.7, help="the gate's floor")
    demo.add_argument(
        "--min-eval-items", type=_positive_int, default=50, help="the gate's evidence minimum"
    )
    demo.add_argument(
        "--settle", type=_positive_float, default=300.0, help="seconds to wait after the stream"
    )
    return parser


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "__".join(str(p) for p in first["loc"]).upper()
        where = f"BORDERLINE_{where}: " if where else ""
        raise BorderlineError(f"invalid settings: {where}{first['msg']}") from None


def _connected(settings: Settings) -> Settings:
    """Settings that name a broker and Redis: external ones, or those of `services up`."""
    from streams.services import ServiceError, running_endpoints

    if not settings.embedded:
        return settings
    endpoints = running_endpoints(settings.services.state_dir)
    if endpoints is None:
        raise ServiceError(
            "no broker and Redis: run `borderline services up` first, or set "
            "BORDERLINE_KAFKA__BOOTSTRAP_SERVERS and BORDERLINE_REDIS__URL"
        )
    return settings.with_services(endpoints.bootstrap_servers, endpoints.redis_url)


def _corpus(settings: Settings, path: Path | None) -> Path:
    if path is not None:
        return path
    from adapters.corpus import fetch_spamassassin

    return fetch_spamassassin(settings.data_dir).path


def _cmd_services(args: argparse.Namespace, settings: Settings) -> int:
    from streams.services import services_down, services_status, services_up

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


def _cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.topics import ensure_topics

    names = settings.kafka.topics.all()
    if args.action == "list":
        for name in names:
            print(name)
        return 0
    settings = _connected(settings)
    kafka = settings.kafka
    assert kafka.bootstrap_servers
    if args.action == "create":
        created = asyncio.run(
            ensure_topics(
                kafka.bootstrap_servers, names, kafka.partitions, kafka.replication_factor
            )
        )
        for name in names:
            state = "created" if name in created else "exists"
            print(f"{name:<40} {state}")
    return 0


def _cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from streams.messages import export_schemas

    for path in export_schemas(args.dir):
        print(path)
    return 0


def _cmd_data(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.corpus import fetch_spamassassin

    result = fetch_spamassassin(args.out or settings.data_dir)
    origin = "cached" if result.cached else "fetched"
    print(f"{origin} {result.items} items -> {result.path} (dropped {result.dropped} empty)")
    for group, n in sorted(result.per_group.items()):
        print(f"  {group:<12} {n}")
    return 0


def _cmd_model(args: argparse.Namespace, settings: Settings) -> int:
    from models.manifest import ModelManifest

    if args.action == "show":
        manifest = ModelManifest.read(args.dir or settings.model.dir)
        print(manifest.model_dump_json(indent=2))
        return 0

    from adapters.bootstrap import bootstrap_model
    from adapters.dataset import read_jsonl, sample
    from adapters.training import TrainConfig

    items = read_jsonl(_corpus(settings, args.labels))
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


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.worker import run_worker

    run_worker(
        _connected(settings), worker_id=args.id, loglevel="debug" if args.verbose else "info"
    )
    return 0


def _cmd_collector(args: argparse.Namespace, settings: Settings) -> int:
    from streams.worker import run_collector

    run_collector(_connected(settings), worker_id=args.id)
    return 0


def _cmd_reviewers(args: argparse.Namespace, settings: Settings) -> int:
    from streams.review_commands import reviewers_command

    return asyncio.run(reviewers_command(args, _connected(settings)))


def _cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    from streams.review_commands import review_command

    return asyncio.run(review_command(args, _connected(settings)))


def _cmd_panel(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.simulation import DEFAULT_PANEL, parse_panel
    from streams.panel import load_truth, run_simulated_panel

    settings = _connected(settings)
    assert settings.kafka.bootstrap_servers and settings.redis.url
    panel = parse_panel(args.reviewers or DEFAULT_PANEL)
    truth = load_truth(str(_corpus(settings, args.data)))
    if args.register:
        from redis.asyncio import Redis

        from adapters.labels import LabelStore

        async def register() -> None:
            assert settings.redis.url
            redis = Redis.from_url(settings.redis.url.get_secret_value())
            await LabelStore(redis, settings.redis.key_prefix).register_reviewers(
                r.reviewer_id for r in panel
            )
            await redis.aclose()

        asyncio.run(register())
    print(
        f"SIMULATED expert panel: {', '.join(r.reviewer_id for r in panel)} "
        f"({args.per_item} per item); Ctrl-C to stop"
    )
    stats = asyncio.run(
        run_simulated_panel(
            settings.kafka.bootstrap_servers,
            settings.kafka.topics,
            panel,
            truth,
            per_item=args.per_item,
            seed=args.seed,
        )
    )
    print(f"answered {stats.requests} requests with {stats.labels} labels")
    return 0


def _cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.dataset import read_jsonl, sample
    from streams.replay import replay_items

    settings = _connected(settings)
    assert settings.kafka.bootstrap_servers
    items = read_jsonl(_corpus(settings, args.data))
    if args.items:
        items = sample(items, min(args.items, len(items)), seed=args.seed)
    report = asyncio.run(
        replay_items(
            settings.kafka.bootstrap_servers, settings.kafka.topics.items, items, rate=args.rate
        )
    )
    print(f"produced {report.produced} items in {report.seconds:.1f}s ({report.rate:.0f}/s)")
    return 0


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "label-efficiency":
        from streams.efficiency_bench import bench_label_efficiency

        bench_label_efficiency(
            _corpus(settings, args.data),
            args.json,
            prevalences=args.prevalence,
            seeds=args.seeds,
            quick=args.quick,
            cache_dir=args.cache_dir,
            pool_size=args.pool_size,
        )
        return 0
    if args.action == "adapt":
        from streams.adapt_bench import bench_adapt

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
    if args.action == "swap":
        from streams.swap_bench import bench_swap

        figures = bench_swap(
            settings, items=args.items, workers=args.workers, adapters=args.adapters, seed=args.seed
        )
    else:
        from streams.bench import bench_stream

        figures = bench_stream(
            settings, items=args.items, rate=args.rate, naive_items=args.naive_items, seed=args.seed
        )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _cmd_adapters(args: argparse.Namespace, settings: Settings) -> int:
    from streams.adapter_commands import adapters_command

    return asyncio.run(adapters_command(args, _connected(settings)))


def _cmd_trainer(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.gate import GateConfig
    from streams.trainer import run_trainer

    gate = GateConfig(
        min_kappa=args.min_kappa, margin=args.margin, min_eval_items=args.min_eval_items
    )
    run_trainer(
        _connected(settings),
        interval_s=args.interval,
        min_new_labels=args.min_new_labels,
        gate=gate,
        once=args.once,
    )
    return 0


def _cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    from streams.policy_commands import policy_command

    return asyncio.run(policy_command(args, _connected(settings)))


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo import DemoOptions, run_demo

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
        **({"panel": args.panel} if args.panel else {}),
    )
    return run_demo(settings, options)


_COMMANDS = {
    "services": _cmd_services,
    "topics": _cmd_topics,
    "schemas": _cmd_schemas,
    "data": _cmd_data,
    "model": _cmd_model,
    "worker": _cmd_worker,
    "produce": _cmd_produce,
    "collector": _cmd_collector,
    "reviewers": _cmd_reviewers,
    "review": _cmd_review,
    "panel": _cmd_panel,
    "bench": _cmd_bench,
    "adapters": _cmd_adapters,
    "policy": _cmd_policy,
    "trainer": _cmd_trainer,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chatty = args.command in {
        "worker",
        "collector",
        "panel",
        "demo",
        "bench",
        "model",
        "data",
        "trainer",
    }
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.INFO if chatty else logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in {"demo", "bench"} and not args.verbose:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)  # group joins: not news here
    try:
        settings = _load_settings()
        return _COMMANDS[args.command](args, settings)
    except BorderlineError as exc:
        print(f"borderline: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("borderline: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
