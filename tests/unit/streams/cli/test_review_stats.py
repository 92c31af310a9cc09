"""`borderline review stats` on a real redis-server: it says how many labelled items the audit
drew (what the unbiased figures rest on), the live adapter's kappa on them or "not enough audit
labels (n of m)", what the trainer is waiting for (which figure, how many more labels), and the
last gate verdict with its intervals."""

from __future__ import annotations

import pytest

from adapters.adapt.estimate import estimate_kappa
from adapters.adapt.verdicts import GateRecord, TrainerStatus, VerdictStore
from adapters.labels.store import LabelStore, ReviewedItem
from streams.cli.main import main
from tests.redis_support import with_redis


def _env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> None:
    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")  # never reached
    monkeypatch.setenv("BORDERLINE_REDIS__URL", redis_url)
    monkeypatch.setenv("BORDERLINE_REDIS__KEY_PREFIX", prefix)


def test_stats_say_what_the_figures_rest_on_and_what_the_trainer_waits_for(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    live = estimate_kappa(["violating", "benign"] * 6, ["violating", "benign"] * 6, min_items=50)

    async def seed(redis: object) -> None:
        store = LabelStore(redis, prefix)  # type: ignore[arg-type]
        items = [
            ReviewedItem(
                f"i{k}", "t", None, 0.5, "uncertain", 1.0, audit_drawn=k < 3, audit_rate=0.1
            )
            for k in range(5)
        ]
        await store.record_requests("v1", items)
        for k in range(5):
            await store.add_label("v1", f"i{k}", "alice", "benign", 2.0)
        verdicts = VerdictStore(redis, prefix)  # type: ignore[arg-type]
        await verdicts.set_status(
            TrainerStatus(
                at=3.0,
                policy_version="v1",
                reason="waiting for 47 more audit evaluation labels (3 of 50)",
                adapter_id="boot",
                live=live.as_dict(),
                live_text=live.describe(),
            )
        )
        await verdicts.record(
            GateRecord(
                adapter_id="v1-cand",
                policy_version="v1",
                passed=False,
                reason="failed: ... lower bound < margin 0.020",
                candidate_kappa=0.8,
                candidate_low=0.7,
                candidate_high=0.9,
                difference=0.05,
                difference_low=-0.02,
                difference_high=0.12,
                confidence=0.9,
                eval_items=60,
                decision="refuse",
            )
        )

    with_redis(redis_url, seed)
    _env(monkeypatch, redis_url, prefix)
    assert main(["review", "stats", "--policy", "v1"]) == 0
    out = capsys.readouterr().out
    assert "audit draws labelled: 3 of 5 labelled items" in out
    assert (
        "live kappa of boot on audit draws since it went live: not enough audit labels (12 of 50)"
        in out
    )
    assert "trainer: waiting for 47 more audit evaluation labels (3 of 50)" in out
    assert (
        "last gate verdict (v1-cand, 60 audit labels) (90% intervals): candidate 0.800 [0.700,"
        " 0.900], candidate - incumbent 0.050 [-0.020, 0.120]; not promoted" in out
    )


def test_stats_without_a_trainer_say_so(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, redis_url, prefix)
    assert main(["review", "stats", "--policy", "v9"]) == 0
    out = capsys.readouterr().out
    assert "audit draws labelled: 0 of 0 labelled items" in out
    assert "trainer: no status under this policy yet" in out
