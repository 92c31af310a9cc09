"""The `borderline` argument parser: every command, option and value check (a bad value is one
readable line, exit 2)."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
from pathlib import Path
from typing import NoReturn

from streams.wire.settings import GateSettings

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


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port up to 65535, got {value}")
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


def _gate(knob: str, what: str = "") -> str:
    """Help for a flag that overrides a gate setting, naming the setting and its default."""
    default = GateSettings.model_fields[knob].default
    return f"{what + ' ' if what else ''}(default: BORDERLINE_GATE__{knob.upper()}, {default})"


def _version() -> str:
    try:
        return importlib.metadata.version("borderline-moderation")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="borderline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"borderline {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    config = sub.add_parser("config", help="the effective settings, secrets masked")
    config.add_argument("action", choices=["show"])

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
    r_add = reviewers_sub.add_parser("add", help="register reviewer ids (prints each new key once)")
    r_add.add_argument("ids", nargs="+")
    reviewers_sub.add_parser("list", help="reviewers and whether their labels count")
    r_clear = reviewers_sub.add_parser("clear", help="count an excluded reviewer's labels again")
    r_clear.add_argument("id")
    r_rotate = reviewers_sub.add_parser(
        "rotate-key", help="a new signing key for a reviewer (shown once; the old one stops)"
    )
    r_rotate.add_argument("id")

    users = sub.add_parser("users", help="reviewer console accounts (reviewer or lead)")
    users_sub = users.add_subparsers(dest="action", required=True, parser_class=_Parser)
    u_add = users_sub.add_parser("add", help="create a user (or change role and password)")
    u_add.add_argument("name")
    u_add.add_argument("--role", choices=["reviewer", "lead"], required=True)
    u_add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    users_sub.add_parser("list", help="users, roles and whether they are active")
    u_disable = users_sub.add_parser("disable", help="stop a user's sessions and tokens now")
    u_disable.add_argument("name")
    u_token = users_sub.add_parser("token", help="a new API token (shown once, stored hashed)")
    u_token.add_argument("name")

    console = sub.add_parser("console", help="the reviewer console (web)")
    console.add_argument("--host", default="127.0.0.1", help="address to listen on")
    console.add_argument("--port", type=_port, default=8600, help="port to listen on")

    review = sub.add_parser("review", help="the review queue and expert agreement")
    review_sub = review.add_subparsers(dest="action", required=True, parser_class=_Parser)
    stats = review_sub.add_parser("stats", help="queue, budget and agreement tables")
    stats.add_argument("--policy", default=None)

    panel = sub.add_parser("panel", help="SIMULATION: answer review requests from ground truth")
    panel.add_argument("--data", type=_existing_file, default=None, help="labelled JSONL")
    panel.add_argument("--reviewers", default=None, help="id:error_rate[:delay_s],...")
    panel.add_argument(
        "--per-item", type=_positive_int, default=None, help="default: what each request asks"
    )
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
    stream.add_argument(
        "--repeat-share",
        type=_share,
        default=0.0,
        help="share of items repeating an earlier text: cache on vs off on that stream",
    )

    adapters = sub.add_parser("adapters", help="the adapter registry")
    adapters_sub = adapters.add_subparsers(dest="action", required=True, parser_class=_Parser)
    adapters_sub.add_parser("list", help="registered adapters; * marks the active one")
    a_show = adapters_sub.add_parser("show", help="an adapter's manifest and history")
    a_show.add_argument("id")
    a_register = adapters_sub.add_parser("register", help="store an adapter folder in Redis")
    a_register.add_argument("dir", type=Path)
    a_promote = adapters_sub.add_parser(
        "promote", help="make an adapter active (all workers); needs its passed gate report"
    )
    a_promote.add_argument("id")
    a_promote.add_argument("--reason", default=None, help="why (required with --force)")
    a_promote.add_argument(
        "--force",
        action="store_true",
        help="promote without a passed gate report for the active policy (audit-logged, alerted)",
    )
    a_rollback = adapters_sub.add_parser(
        "rollback", help="restore the most recent earlier adapter that verifies"
    )
    a_rollback.add_argument("--policy", default=None, help="policy version (default: settings)")
    a_rollback.add_argument("--reason", default=None)
    for p in (a_promote, a_rollback):
        p.add_argument("--actor", default=None, help="who (default: $USER@host)")
    a_audit = adapters_sub.add_parser("audit", help="forced promotions: who, when, why")
    a_audit.add_argument("--limit", type=_positive_int, default=50)
    a_keygen = adapters_sub.add_parser(
        "keygen", help="the trainer's adapter signing key pair (private: trainer; public: workers)"
    )
    a_keygen.add_argument("--out", type=Path, required=True, help="folder for the two PEM files")
    a_keygen.add_argument(
        "--public-out", type=Path, default=None, help="also copy the public key into this folder"
    )
    a_keygen.add_argument(
        "--keep", action="store_true", help="a pair already there is kept, not an error"
    )
    a_keygen.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a pair already there (old signatures stop verifying)",
    )

    b_console = bench_sub.add_parser("console", help="simulated reviewers over HTTP")
    b_console.add_argument("--reviewers", type=_positive_int, default=20)
    b_console.add_argument("--items", type=_positive_int, default=400, help="review requests")
    b_console.add_argument("--json", type=Path, default=None)

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
    adapt.add_argument(
        "--min-eval-items",
        type=_positive_int,
        default=None,
        help=_gate("min_eval_items", "the gate's evidence minimum"),
    )

    chaos = bench_sub.add_parser("chaos", help="faults during a stream: lost items and labels")
    chaos.add_argument(
        "--json",
        type=Path,
        default=Path("out/bench-chaos.json"),
        help="figures written here, the processes' logs beside it (default: %(default)s)",
    )
    chaos.add_argument(
        "--items",
        type=_positive_int,
        default=3000,
        help="corpus items streamed; the faults are spread over the stream (default: %(default)s)",
    )
    chaos.add_argument(
        "--rate", type=_positive_float, default=10.0, help="items per second (default: %(default)s)"
    )
    chaos.add_argument(
        "--seed", type=int, default=0, help="which items, and the panel's draws (default: 0)"
    )

    trainer = sub.add_parser("trainer", help="train, gate and promote adapters as labels arrive")
    # every default is the setting's (BORDERLINE_GATE__...): a flag overrides it
    trainer.add_argument(
        "--interval", type=_positive_float, default=None, help=_gate("interval_s", "seconds")
    )
    trainer.add_argument(
        "--min-new-labels", type=_positive_int, default=None, help=_gate("min_new_labels")
    )
    trainer.add_argument("--min-kappa", type=float, default=None, help=_gate("min_kappa"))
    trainer.add_argument("--margin", type=float, default=None, help=_gate("margin"))
    trainer.add_argument(
        "--min-eval-items", type=_positive_int, default=None, help=_gate("min_eval_items")
    )
    trainer.add_argument("--once", action="store_true", help="one forced round, then exit")

    policy = sub.add_parser("policy", help="versioned moderation policies")
    policy_sub = policy.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p_publish = policy_sub.add_parser("publish", help="validate, record and announce a policy")
    p_publish.add_argument("file", type=_existing_file)
    p_publish.add_argument("--actor", default=None, help="who (default: $USER@host)")
    p_show = policy_sub.add_parser("show", help="the active policy (or --version) as YAML")
    p_show.add_argument("--version", default=None)
    policy_sub.add_parser("history", help="one line per publication")

    store = sub.add_parser("store", help="Redis as a view of the record on Kafka")
    store_sub = store.add_subparsers(dest="action", required=True, parser_class=_Parser)
    store_sub.add_parser("rebuild", help="replay the topics into Redis (idempotent)")
    store_sub.add_parser("status", help="whether the store is marked complete")

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
    demo.add_argument(
        "--min-kappa", type=float, default=None, help=_gate("min_kappa", "the gate's floor")
    )
    demo.add_argument(
        "--min-eval-items",
        type=_positive_int,
        default=None,
        help=_gate("min_eval_items", "the gate's evidence minimum"),
    )
    demo.add_argument(
        "--settle", type=_positive_float, default=300.0, help="seconds to wait after the stream"
    )
    demo.add_argument(
        "--console",
        action="store_true",
        help="also run the reviewer console; prints its URL and one-time credentials",
    )
    return parser
