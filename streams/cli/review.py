"""`borderline reviewers add | list | clear` and `borderline review stats`: the expert side for
people. Stats print queue depth, budget use, and agreement per reviewer and per reviewer pair."""

from __future__ import annotations

import argparse
import getpass
import socket

from redis.asyncio import Redis

from adapters.labels.agreement import agreement_report, expert_ceiling
from adapters.labels.consensus import consensus
from adapters.labels.store import LabelStore
from streams.service.record import open_journal
from streams.wire.settings import Settings

__all__ = ["review_command", "reviewers_command"]


def _actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


async def reviewers_command(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    store = LabelStore(redis, settings.redis.key_prefix)
    try:
        if args.action in ("add", "clear"):
            assert settings.kafka.bootstrap_servers
            # recorded on the reviewer-events topic too: the store is rebuilt from it
            async with open_journal(
                settings.kafka.bootstrap_servers, settings.kafka.topics, actor=_actor()
            ) as journal:
                store.journal = journal
                if args.action == "add":
                    added = await store.register_reviewers(args.ids)
                    total = len(await store.registered())
                    print(f"registered {added} new reviewer(s); {total} in all")
                else:
                    await store.clear(args.id)
                    print(f"{args.id}: cleared, labels count for training again")
        else:
            excluded, cleared = await store.excluded(), await store.cleared()
            for reviewer in sorted(await store.registered()):
                state = (
                    "excluded"
                    if reviewer in excluded
                    else ("cleared" if reviewer in cleared else "active")
                )
                print(f"{reviewer:<24} {state}")
        return 0
    finally:
        await redis.aclose()


async def review_command(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value())
    store = LabelStore(redis, settings.redis.key_prefix)
    policy = args.policy or settings.policy.version
    review = settings.review
    try:
        votes = await store.all_votes(policy)
        excluded = await store.excluded()
        report = agreement_report(votes, min_shared=review.min_shared)
        ceiling = expert_ceiling(votes, excluded, min_shared=review.min_shared)
        open_now = await store.open_count(policy)
        labels = sum(len(v) for v in votes.values())
        decided = [consensus(i, v, exclude=excluded) for i, v in votes.items()]
        print(f"policy {policy}")
        print(
            f"queue: {open_now} open requests (budget max {review.max_open}, "
            f"{review.labels_per_hour:g} labels/hour)"
        )
        print(
            f"labels: {labels} on {len(votes)} items; consensus on "
            f"{sum(1 for c in decided if c.label is not None)}; "
            f"multi-rater {_fmt(report.multi_rater)} over {report.multi_rater_items} items; "
            f"expert pairwise kappa without excluded reviewers (the ceiling) {_fmt(ceiling)}"
        )
        print()
        print(f"{'reviewer':<20} {'labels':>6} {'compared':>8} {'agree':>6} {'kappa':>6}  state")
        for r in report.reviewers:
            state = "excluded" if r.reviewer in excluded else "ok"
            print(
                f"{r.reviewer:<20} {r.labels:>6} {r.compared:>8} {_fmt(r.agreement)} "
                f"{_fmt(r.kappa)}  {state}"
            )
        print()
        print(f"{'pair':<40} {'shared':>6} {'kappa':>6}")
        for pair in report.pairs:
            print(f"{pair.a + ' / ' + pair.b:<40} {pair.shared_items:>6} {_fmt(pair.kappa)}")
        return 0
    finally:
        await redis.aclose()
