"""`borderline reviewers add | list | clear | rotate-key` and `borderline review stats`: the expert
side for people. ``add`` and ``rotate-key`` print a reviewer's signing key once (labels sent over
Kafka must carry its HMAC signature, see `adapters.labels.admission`). Stats print queue depth,
budget use, the audit draws and what is computed on them (the live adapter's kappa, the last
gate verdict's intervals), what the trainer is waiting for, and agreement per reviewer and per
reviewer pair."""

from __future__ import annotations

import argparse
import getpass
import socket

from redis.asyncio import Redis

from adapters.adapt.verdicts import GateRecord, VerdictStore
from adapters.labels.agreement import agreement_report, expert_ceiling
from adapters.labels.consensus import consensus
from adapters.labels.keyring import ReviewerKeys
from adapters.labels.store import LabelStore
from adapters.labels.trust import Trust, trusted_panel
from streams.service.record import open_journal
from streams.wire.security import KafkaSecurity, redis_options
from streams.wire.settings import Settings

__all__ = ["review_command", "reviewers_command"]


def _actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def _show_key(reviewer_id: str, key: bytes) -> None:
    print(
        f"{reviewer_id}: signing key {key.hex()} (shown once: hand it to the reviewer; "
        f"`borderline reviewers rotate-key {reviewer_id}` replaces it)"
    )


async def _add(store: LabelStore, keys: ReviewerKeys, ids: list[str]) -> int:
    """Register ``ids``; a key for each that has none (printed once)."""
    added = await store.register_reviewers(ids)
    for reviewer_id in dict.fromkeys(ids):
        if await keys.nonce_of(reviewer_id) is None:
            _show_key(reviewer_id, await keys.issue(reviewer_id))
        else:
            print(f"{reviewer_id}: already has a signing key (rotate-key to replace it)")
    print(f"registered {added} new reviewer(s); {len(await store.registered())} in all")
    return 0


async def _rotate(store: LabelStore, keys: ReviewerKeys, reviewer_id: str) -> int:
    if not await store.is_registered(reviewer_id):
        print(f"error: {reviewer_id!r} is not a registered reviewer (borderline reviewers add ID)")
        return 2
    _show_key(reviewer_id, await keys.issue(reviewer_id))
    print(f"{reviewer_id}: labels signed with the previous key are refused from now on")
    return 0


async def reviewers_command(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    prefix = settings.redis.key_prefix
    store = LabelStore(redis, prefix)
    keys = ReviewerKeys(redis, prefix, settings.review.key_secret.get_secret_value().encode())
    try:
        if args.action in ("add", "clear", "rotate-key"):
            assert settings.kafka.bootstrap_servers
            # recorded on the reviewer-events topic too (key nonces, never keys): the store is
            # rebuilt from it
            async with open_journal(
                settings.kafka.bootstrap_servers,
                settings.kafka.topics,
                actor=_actor(),
                security=KafkaSecurity.of(settings.kafka),
            ) as journal:
                store.journal = keys.journal = journal
                if args.action == "add":
                    return await _add(store, keys, args.ids)
                if args.action == "rotate-key":
                    return await _rotate(store, keys, args.id)
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
                signed = "key" if await keys.nonce_of(reviewer) else "no key"
                print(f"{reviewer:<24} {state:<9} {signed}")
        return 0
    finally:
        await redis.aclose()


def _interval(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"


def _gate_line(report: GateRecord) -> str:
    conf = "" if report.confidence is None else f" ({report.confidence:.0%} intervals)"
    line = (
        f"last gate verdict ({report.adapter_id}, {report.eval_items} audit labels){conf}: "
        f"candidate {_fmt(report.candidate_kappa).strip()}"
        f"{_interval(report.candidate_low, report.candidate_high)}"
    )
    if report.difference is not None:
        line += (
            f", candidate - incumbent {report.difference:.3f}"
            f"{_interval(report.difference_low, report.difference_high)}"
        )
    return f"{line}; {'promoted' if report.promoted else 'not promoted'}: {report.reason}"


async def _audit_lines(
    store: LabelStore, verdicts: VerdictStore, policy: str, votes: dict[str, dict[str, str]]
) -> None:
    """The audit draws of ``policy`` and the figures computed on them (unbiased), then what the
    trainer is waiting for."""
    reviewed = await store.reviewed_items(list(votes))
    drawn = sum(1 for r in reviewed.values() if r.audit_drawn or r.reason == "audit")
    print(
        f"audit draws labelled: {drawn} of {len(votes)} labelled items (the live kappa and the "
        "gate are computed on these, weighted by draw probability; the other items were chosen "
        "for being uncertain, boundary or policy examples, and a kappa on them is biased low)"
    )
    status = await verdicts.status()
    if status is not None and status.policy_version == policy:
        if status.adapter_id is not None:
            print(
                f"live kappa of {status.adapter_id} on audit draws since it went live: "
                f"{status.live_text or 'no audit labels since it went live'}"
            )
        print(f"trainer: {status.reason}")
    else:
        print("trainer: no status under this policy yet")
    reports = [r for r in await verdicts.reports() if r.policy_version == policy]
    if reports:
        print(_gate_line(reports[-1]))


def _panel_line(trust: Trust, min_panel: int) -> str:
    """How many reviewers judge each other, and whether that is enough to exclude anyone."""
    line = f"panel: {trust.panel} reviewer(s) gave labels (at least {min_panel} to exclude one)"
    if trust.held:
        return f"{line}; too few to exclude {', '.join(sorted(trust.held))}, evidently below"
    return f"{line}; too small: nobody can be excluded" if trust.short else line


async def review_command(args: argparse.Namespace, settings: Settings) -> int:
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url.get_secret_value(), **redis_options(settings.redis))
    store = LabelStore(redis, settings.redis.key_prefix)
    policy = args.policy or settings.policy.version
    review = settings.review
    try:
        votes = await store.all_votes(policy)
        excluded = await store.excluded()
        # every reviewer against the consensus of the trusted reviewers only
        report = agreement_report(votes, min_shared=review.min_shared, exclude=excluded)
        trust = trusted_panel(
            await store.votes_every_policy(),
            threshold=review.agreement_threshold,
            cleared=await store.cleared(),
            min_shared=review.min_shared,
            min_panel=review.min_panel,
            confidence=review.trust_confidence,
        )
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
        await _audit_lines(store, VerdictStore(redis, settings.redis.key_prefix), policy, votes)
        print(_panel_line(trust, review.min_panel))
        print()
        print(
            f"each against the trusted others' consensus; excluded when the "
            f"{review.trust_confidence:.0%} upper bound is below {review.agreement_threshold:g}"
        )
        header = f"{'reviewer':<20} {'labels':>6} {'compared':>8} {'agree':>6} {'kappa':>6}"
        print(f"{header} {'bound':>6}  state")
        for r in report.reviewers:
            state = "excluded" if r.reviewer in excluded else "ok"
            print(
                f"{r.reviewer:<20} {r.labels:>6} {r.compared:>8} {_fmt(r.agreement)} "
                f"{_fmt(r.kappa)} {_fmt(r.upper(review.trust_confidence))}  {state}"
            )
        print()
        print(f"{'pair':<40} {'shared':>6} {'kappa':>6}")
        for pair in report.pairs:
            print(f"{pair.a + ' / ' + pair.b:<40} {pair.shared_items:>6} {_fmt(pair.kappa)}")
        return 0
    finally:
        await redis.aclose()
