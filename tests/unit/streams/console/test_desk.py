"""Answer keys: the defaults, configured ones, and the keys the console keeps for itself."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.console.desk import hotkeys
from streams.wire.settings import ConsoleSettings


def test_configured_keys_come_first_then_free_digits() -> None:
    assert hotkeys(["violating"], "12") == [("1", "benign"), ("2", "violating")]
    assert hotkeys(["a", "b"], "bb") == [("b", "benign"), ("1", "a"), ("2", "b")]
    many = hotkeys([f"c{i}" for i in range(12)])
    assert len(many) == 9 and many[-1] == ("9", "c7")


@pytest.mark.parametrize("keys", ["s", "u", "r", "J", "1234567890", "!"])
def test_keys_the_console_uses_or_cannot_show_are_refused(keys: str) -> None:
    with pytest.raises(ValidationError):
        ConsoleSettings(hotkeys=keys)
    assert ConsoleSettings(hotkeys="jkl").hotkeys == "jkl"
