"""Unit tests of the demo's own pieces that need no broker or Redis: the stream it composes, the
compressed-time settings (and that the environment wins over them), the state it keeps, and the
report and plots it writes from that state (including an empty one, as after an early Ctrl-C)."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import adapters.offline.simulation
import streams.demo.run
import streams.demo.setup
import streams.demo.state
from adapters.labels.dataset import LabeledItem
from adapters.offline.simulation import policy_truth
from streams.cli.main import main
from streams.demo.plots import PLOTS, adapter_kappas, kappa_series
from streams.demo.report import write_report
from streams.demo.setup import DEMO_SETTINGS, compose_stream, demo_settings
from streams.demo.state import DemoState, GateVerdict, decided_label
from streams.wire.settings import Settings


def test_doctests() -> None:
    attempted = 0
    for module in (
        streams.demo.run,
        streams.demo.setup,
        streams.demo.state,
        adapters.offline.simulation,
    ):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 0


def _corpus() -> list[LabeledItem]:
    items = [LabeledItem(f"easy-ham-1/{i:05d}", f"ham {i}", 0) for i in range(300)]
    items += [LabeledItem(f"spam-1/{i:05d}", f"spam {i}", 1) for i in range(200)]
    items += [LabeledItem(f"hard-ham-1/{i:05d}", f"promo {i}", 0) for i in range(40)]
    return items


def test_stream_is_enriched_with_promotional_mail_and_avoids_training_items() -> None:
    data = _corpus()
    exclude = {i.item_id for i in data[:100]}
    stream = compose_stream(data, 100, seed=3, promo_share=0.2, exclude=exclude)
    ids = [i.item_id for i in stream]
    assert len(ids) == len(set(ids)) == 100
    assert not exclude & set(ids)
    assert sum(i.startswith("hard-ham") for i in ids) == 20
    assert compose_stream(data, 100, seed=3, promo_share=0.2, exclude=exclude) == stream
    # only as much promotional mail as there is
    many = compose_stream(data, 400, seed=3, promo_share=0.5, exclude=set())
    assert sum(i.item_id.startswith("hard-ham") for i in many) == 40


def test_a_run_tag_prefixes_ids_and_the_simulated_truth_still_reads_them() -> None:
    stream = compose_stream(_corpus(), 50, seed=1, promo_share=0.2, exclude=set(), tag="demo-ab")
    assert all(i.item_id.startswith("demo-ab:") for i in stream)
    promo = next(i for i in stream if "hard-ham" in i.item_id)
    assert policy_truth(promo.item_id, "v2", "benign") == "violating"
    assert policy_truth(promo.item_id, "v1", "benign") == "benign"


def test_compressed_time_settings_yield_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BORDERLINE_DRIFT__REFERENCE_SIZE", "777")
    settings = demo_settings(Settings())
    assert settings.drift.reference_size == 777
    assert settings.drift.window_size == DEMO_SETTINGS["drift"]["window_size"]
    assert settings.review.labels_per_hour == DEMO_SETTINGS["review"]["labels_per_hour"]


def test_the_demo_gate_floor_is_below_its_panels_ceiling_and_yields_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """make demo refused every v2 candidate at the settings' 0.7: its panel agrees with itself at
    about 0.73 and v2 has about 160 audit labels. The margin over the incumbent is unchanged."""
    settings = demo_settings(Settings())
    assert settings.gate.min_kappa == 0.5
    assert settings.gate.margin == Settings().gate.margin
    monkeypatch.setenv("BORDERLINE_GATE__MIN_KAPPA", "0.8")
    assert demo_settings(Settings()).gate.min_kappa == 0.8


def _decision(item_id: str, action: str, p: float, adapter: str, policy: str) -> dict[str, object]:
    return {
        "item_id": item_id,
        "action": action,
        "probabilities": {"violating": p},
        "adapter_version": adapter,
        "policy_version": policy,
        "worker": "w1",
    }


def _state() -> tuple[DemoState, dict[str, str]]:
    state = DemoState(items_total=80, items_in=80)
    state.started -= 120
    truth = {}
    for k in range(80):
        item = (
            f"hard-ham-1/{k:05d}"
            if k % 4 == 0
            else f"spam-1/{k:05d}"
            if k % 4 == 1
            else f"easy-ham-1/{k:05d}"
        )
        truth[item] = "violating" if item.startswith("spam") else "benign"
        policy, adapter = ("v1", "boot") if k < 40 else ("v2", "cand-1")
        blocked = item.startswith("spam") or (adapter == "cand-1" and item.startswith("hard-ham"))
        state.on_message(
            "decision",
            _decision(
                item, "block" if blocked else "allow", 0.9 if blocked else 0.1, adapter, policy
            ),
        )
        state.decided_at[item] = 1.5 * k
        if k % 3 == 0:
            state.on_message("review", {"reason": "audit" if k % 2 else "uncertain"})
    state.policy_events = [(0.0, "v1"), (50.0, "v2")]
    state.consensus = {p: {i: policy_truth(i, p, truth[i]) for i in truth} for p in ("v1", "v2")}
    state.on_message(
        "adapter", {"event": "promoted", "adapter_id": "cand-1", "policy_version": "v2"}
    )
    state.adapter_events[-1]["t"] = 60.0
    state.verdicts.append(
        GateVerdict(60.0, "cand-1", "v2", True, 0.9, 0.4, 0.7, 240, 60, "gate passed")
    )
    state.samples = [
        {
            "t": float(t),
            "items_in": t // 2,
            "drift_input": 0.5,
            "drift_prediction": 0.01,
            "drift_concept": 0.1,
        }
        for t in range(0, 120, 2)
    ]
    return state, truth


def test_state_and_per_adapter_kappa() -> None:
    state, truth = _state()
    assert state.actions()["block"] > 0
    assert state.review_requests == {"audit": 13, "uncertain": 14}
    # no audit draws: no number, only the biased figure on every reviewed item, labelled so
    per = adapter_kappas(state)
    assert per["boot (v1)"]["reviewed_items"] == 40 and per["cand-1 (v2)"]["reviewed_items"] == 40
    assert per["boot (v1)"]["value"] is None
    assert per["boot (v1)"]["figure"] == "not enough audit labels (0 of 30)"
    assert per["boot (v1)"]["reviewed_kappa_biased"] == pytest.approx(1.0)
    # every item of v1 drawn at rate 0.5, none of v2: v1 has a number with its interval
    audit = {"v1": {i: 2.0 for i, d in state.decisions.items() if d["policy_version"] == "v1"}}
    per = adapter_kappas(state, audit)
    assert per["boot (v1)"]["value"] == pytest.approx(1.0)  # under v1 it was right
    assert per["boot (v1)"]["items"] == 40 and per["boot (v1)"]["low"] is not None
    assert per["cand-1 (v2)"]["figure"] == "not enough audit labels (0 of 30)"
    series = kappa_series(state, truth, audit)
    assert all(p["truth"] is None or p["truth"] == pytest.approx(1.0) for p in series)
    assert any(p["expert"] == pytest.approx(1.0) for p in series)
    assert all(p["expert_n"] in (0,) or p["expert_n"] >= 30 for p in series)
    assert decided_label({"action": "review", "probabilities": {"violating": 0.6}}) == "violating"


def test_report_and_plots_are_written(tmp_path: Path) -> None:
    state, truth = _state()
    summary = {
        "items_in": 80,
        "items_decided": 80,
        "dead_letters": 0,
        "labels_collected": 100,
        "policy_change_at_s": 50.0,
        "seconds_to_promotion": 10.0,
        "labels_to_promotion": 240,
        "final_adapter": "cand-1",
        "kappa_by_adapter": adapter_kappas(state),
    }
    state.trainer = "waiting for 12 more audit evaluation labels (38 of 50)"
    write_report(tmp_path, state, summary, truth)
    report = (tmp_path / "report.md").read_text()
    assert (
        "The trainer's last step: waiting for 12 more audit evaluation labels (38 of 50)." in report
    )
    assert "| boot (v1) | 0 | not enough audit labels (0 of 30) | 40 | 1.000 |" in report
    assert "kappa on reviewed items (biased)" in report
    assert "policy v2 published" in report
    assert "cand-1 (v2) promoted" in report
    for name in PLOTS:
        assert (tmp_path / name).stat().st_size > 10_000
        assert f"]({name})" in report


def test_report_of_an_empty_run(tmp_path: Path) -> None:
    summary = {"items_in": 0, "items_decided": 0, "dead_letters": 0, "labels_collected": 0}
    write_report(tmp_path, DemoState(), summary, {})
    assert (tmp_path / "report.md").is_file()
    assert all((tmp_path / name).is_file() for name in PLOTS)


def test_bad_panel_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--panel", "alice"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected id:error_rate" in err
