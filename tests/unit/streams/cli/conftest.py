"""What every CLI unit test shares: an environment with no BORDERLINE_* variable of the machine's
and state, data and model folders of the test's own, and the one-line error check."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_env(no_borderline_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # never look at (or write to) the repository's own state, data or model folders
    monkeypatch.setenv("BORDERLINE_SERVICES__STATE_DIR", str(tmp_path / "services"))
    monkeypatch.setenv("BORDERLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BORDERLINE_MODEL__DIR", str(tmp_path / "model"))


def one_line(text: str) -> str:
    """The text is one line and no traceback; return it."""
    assert "Traceback" not in text
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]
