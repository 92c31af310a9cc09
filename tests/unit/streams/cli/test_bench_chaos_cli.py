"""Unit tests for `borderline bench chaos`'s arguments: a bad one is one line with exit status 2,
before any service or process starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli.main import main

from .conftest import one_line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--items", "0"], "above 0"),
        (["--rate", "fast"], "'fast'"),
        (["--sideways"], "--sideways"),
    ],
)
def test_a_bad_argument_isone_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "chaos", *argv])
    assert info.value.code == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("borderline") and "error" in line and says in line
    assert captured.out == ""


def test_a_stream_too_short_for_its_faults_is_one_line_naming_the_fix(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bench", "chaos", "--items", "100", "--json", str(tmp_path / "c.json")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("borderline: error: a stream of 10 s is too short for the faults")
    assert "lower --rate or raise --items" in line
    assert not (tmp_path / "c.json").exists()
