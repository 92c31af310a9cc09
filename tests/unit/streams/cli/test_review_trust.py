"""`borderline review stats` on a real redis-server, the reviewer rows (issue 11, item 4): every
reviewer's kappa is against the consensus of the trusted reviewers only (the excluded one's
votes left out), with the upper bound exclusion reads, and a panel line that says when the panel
is too small to exclude anyone."""

from __future__ import annotations

import re

import numpy as np
import pytest

from adapters.labels.agreement import reviewer_agreement
from adapters.labels.store import LabelStore
from streams.cli.main import main
from tests.redis_support import with_redis

V, B = "violating", "benign"


def _env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> None:
    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")  # never reached
    monkeypatch.setenv("BORDERLINE_REDIS__URL", redis_url)
    monkeypatch.setenv("BORDERLINE_REDIS__KEY_PREFIX", prefix)
    monkeypatch.setenv("BORDERLINE_REVIEW__MIN_SHARED", "25")


def _labels(reviewers: dict[str, float], items: int = 120) -> dict[str, dict[str, str]]:
    rng = np.random.default_rng(7)
    labels = {}
    for n in range(items):
        truth = V if rng.random() < 0.4 else B
        labels[f"i{n}"] = {
            r: (truth if rng.random() >= e else (B if truth == V else V))
            for r, e in reviewers.items()
        }
    return labels


def _store(
    redis_url: str, prefix: str, labels: dict[str, dict[str, str]], excluded: set[str]
) -> None:
    async def seed(redis: object) -> None:
        store = LabelStore(redis, prefix)  # type: ignore[arg-type]
        for item, votes in labels.items():
            for reviewer, label in votes.items():
                await store.add_label("v1", item, reviewer, label, 2.0)
        await store.set_excluded(excluded)

    with_redis(redis_url, seed)


def _row(out: str, reviewer: str) -> list[str]:
    (line,) = [line for line in out.splitlines() if re.match(rf"{reviewer}\s+\d", line)]
    return line.split()


def test_stats_show_each_reviewer_against_the_trusted_consensus(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # randy answers at random (error rate 0.5); the collector excluded him
    labels = _labels({"alice": 0.03, "bob": 0.05, "carol": 0.05, "randy": 0.5})
    _store(redis_url, prefix, labels, {"randy"})
    _env(monkeypatch, redis_url, prefix)
    assert main(["review", "stats", "--policy", "v1"]) == 0
    out = capsys.readouterr().out
    trusted = {
        r.reviewer: r for r in reviewer_agreement(labels, min_compared=25, exclude={"randy"})
    }
    dragged = {r.reviewer: r for r in reviewer_agreement(labels, min_compared=25)}
    for reviewer in ("alice", "bob", "carol"):
        row = _row(out, reviewer)
        assert float(row[4]) == pytest.approx(trusted[reviewer].kappa, abs=5e-4)
        assert float(row[5]) == pytest.approx(trusted[reviewer].upper(), abs=5e-4)
        assert row[6] == "ok"
        assert trusted[reviewer].kappa > dragged[reviewer].kappa  # type: ignore[operator]
    assert _row(out, "randy")[6] == "excluded"
    assert "panel: 4 reviewer(s) gave labels (at least 3 to exclude one)\n" in out
    assert "excluded when the 95% upper bound is below 0.8" in out


def test_stats_say_when_the_panel_is_too_small(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(redis_url, prefix, _labels({"alice": 0.03, "randy": 0.5}), set())
    _env(monkeypatch, redis_url, prefix)
    assert main(["review", "stats", "--policy", "v1"]) == 0
    out = capsys.readouterr().out
    assert (
        "panel: 2 reviewer(s) gave labels (at least 3 to exclude one); too few to exclude "
        "alice, randy, evidently below" in out
    )
    assert [_row(out, r)[6] for r in ("alice", "randy")] == ["ok", "ok"]


def test_stats_of_a_lone_reviewer_say_nobody_can_be_excluded(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(redis_url, prefix, _labels({"alice": 0.03}, items=30), set())
    _env(monkeypatch, redis_url, prefix)
    assert main(["review", "stats", "--policy", "v1"]) == 0
    out = capsys.readouterr().out
    assert "panel: 1 reviewer(s) gave labels (at least 3 to exclude one); too small" in out
