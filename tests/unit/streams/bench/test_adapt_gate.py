"""`bench adapt` names the gate its run judged with. Seen: its JSON said min_kappa 0.7 while
the demo's run refused a candidate for its lower bound under 0.500, the demo's floor."""

from __future__ import annotations

import pytest

from streams.bench.adapt import gate_in_force
from streams.demo.state import DemoOptions
from streams.wire.settings import Settings


def test_the_demos_floor_unless_the_environment_or_the_options_set_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert gate_in_force(Settings(), DemoOptions()).min_kappa == 0.5
    assert gate_in_force(Settings(), DemoOptions(min_kappa=0.6)).min_kappa == 0.6
    monkeypatch.setenv("BORDERLINE_GATE__MIN_KAPPA", "0.65")
    assert gate_in_force(Settings(), DemoOptions()).min_kappa == 0.65
