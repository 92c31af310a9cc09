"""Unit tests for streams.cli.main: bad arguments and every BorderlineError are reported as one
readable line with exit status 2, never a traceback. Only commands that need no broker, Redis or
model run here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.cli.main import main
from streams.wire.messages import MESSAGE_TYPES

from .conftest import one_line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["model", "init", "--train-size", "-3"], "--train-size"),
        (["model", "init", "--epochs", "0"], "above 0"),
        (["produce", "--data", "/nonexistent"], "no such file: /nonexistent"),
        (["bench", "stream", "--items", "abc"], "'abc'"),
        (["demo", "--rate", "fast"], "'fast'"),
        (["demo", "--change-at", "1.5"], "between 0 and 1"),
        (["bench", "adapt", "--items", "0"], "above 0"),
        (["nope"], "invalid choice: 'nope'"),
        (["services", "sideways"], "invalid choice: 'sideways'"),
        ([], "command"),
        (["model"], "action"),
    ],
)
def test_bad_arguments_exit_2_withone_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("borderline")
    assert "error" in line
    assert says in line
    assert captured.out == ""


def test_worker_without_services_is_one_line_naming_services_up(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "services").mkdir()
    assert main(["worker"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("borderline: error: ")
    assert "borderline services up" in line


def test_invalid_env_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("BORDERLINE_WORKER__BATCH_MAX_SIZE", "abc")
    out = tmp_path / "schemas"
    assert main(["schemas", "export", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("borderline: error: ")
    assert "BORDERLINE_WORKER__BATCH_MAX_SIZE" in line
    assert not out.exists()  # settings are read before any command runs


def test_only_one_external_service_isone_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    assert main(["schemas", "export", str(tmp_path / "schemas")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("borderline: error: ")
    assert "BORDERLINE_REDIS__URL is missing" in line


def test_schemas_export_writes_the_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "schemas"
    assert main(["schemas", "export", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}.schema.json" for n in MESSAGE_TYPES)
    for path in out.iterdir():
        assert "$schema" in json.loads(path.read_text())
    printed = capsys.readouterr().out.splitlines()
    assert sorted(Path(p).name for p in printed) == names


def test_model_show_on_an_empty_dir_is_one_line_naming_model_init(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["model", "show", "--dir", str(empty)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("borderline: error: ")
    assert "model init" in line
    assert str(empty) in line


# --- the gate's knobs: settings first, a flag overrides -----------------------------------------


def _trainer(argv: list[str]) -> Any:
    from streams.cli.main import trainer_settings
    from streams.cli.parser import build_parser
    from streams.wire.settings import Settings

    return trainer_settings(build_parser().parse_args(["trainer", *argv]), Settings()).gate


def test_trainer_flags_default_to_the_gate_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.wire.settings import GateSettings

    assert _trainer([]) == GateSettings()
    monkeypatch.setenv("BORDERLINE_GATE__MIN_KAPPA", "0.55")
    monkeypatch.setenv("BORDERLINE_GATE__INTERVAL_S", "3")
    gate = _trainer([])
    assert (gate.min_kappa, gate.interval_s, gate.min_eval_items) == (0.55, 3.0, 50)


def test_trainer_flags_override_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BORDERLINE_GATE__MIN_KAPPA", "0.55")
    monkeypatch.setenv("BORDERLINE_GATE__MARGIN", "0.05")
    gate = _trainer(
        [
            *("--min-kappa", "0.6", "--margin", "0.01", "--min-eval-items", "30"),
            *("--min-new-labels", "10", "--interval", "2"),
        ]
    )
    assert (gate.min_kappa, gate.margin, gate.min_eval_items) == (0.6, 0.01, 30)
    assert (gate.min_new_labels, gate.interval_s, gate.rollback_cooldown_s) == (10, 2.0, 60.0)


def test_trainer_config_is_built_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.adapt.gate import GateConfig
    from streams.service.trainer import TrainerConfig
    from streams.wire.settings import Settings

    monkeypatch.setenv("BORDERLINE_GATE__ROLLBACK_COOLDOWN_S", "5")
    monkeypatch.setenv("BORDERLINE_GATE__MIN_NEW_LABELS", "7")
    config = TrainerConfig.from_settings(Settings())
    assert config.gate == GateConfig(min_kappa=0.7, margin=0.02, min_eval_items=50)
    assert (config.min_new_labels, config.cooldown_s, config.rules.cooldown_s) == (7, 5.0, 5.0)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--min-kappa", "1.5"], "--min-kappa: Input should be less than or equal to 1"),
        (["--margin", "-3"], "--margin: Input should be greater than or equal to -2"),
    ],
)
def test_a_bad_trainer_flag_isone_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trainer", *argv]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("borderline: error: ")
    assert says in line


def test_the_demo_and_bench_adapt_take_the_gate_settings_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams.cli.parser import build_parser
    from streams.demo.state import DemoOptions
    from streams.wire.settings import Settings

    monkeypatch.setenv("BORDERLINE_GATE__MIN_KAPPA", "0.65")
    knobs = Settings().gate
    parser = build_parser()
    plain = parser.parse_args(["demo"])
    told = parser.parse_args(["demo", "--min-kappa", "0.5", "--min-eval-items", "30"])
    bench = parser.parse_args(["bench", "adapt"])
    assert (plain.min_kappa, plain.min_eval_items, bench.min_eval_items) == (None, None, None)
    assert DemoOptions(min_kappa=plain.min_kappa).gate(knobs) == knobs
    assert DemoOptions().gate(knobs).min_kappa == 0.65
    gate = DemoOptions(min_kappa=told.min_kappa, min_eval_items=told.min_eval_items).gate(knobs)
    assert (gate.min_kappa, gate.min_eval_items, gate.margin) == (0.5, 30, 0.02)


def test_trainer_help_names_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["trainer", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: BORDERLINE_GATE__MIN_KAPPA, 0.7)" in text
    assert "(default: BORDERLINE_GATE__INTERVAL_S, 15.0)" in text


# --- configuration that refuses mistakes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("BORDERLINE_WORKER__BATCH_MAX_SIZ", "did you mean BORDERLINE_WORKER__BATCH_MAX_SIZE?"),
        ("BORDERLINE_GATE__MIN_KAPA", "did you mean BORDERLINE_GATE__MIN_KAPPA?"),
        ("borderline_kafka__partition", "did you mean BORDERLINE_KAFKA__PARTITIONS?"),
        ("BORDERLINE_NOTHING_LIKE_IT_AT_ALL", "see `borderline config show`"),
    ],
)
def test_an_unknown_setting_is_an_error_naming_it_and_the_closest(
    variable: str, hint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, "3")
    assert main(["config", "show"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"unknown setting {variable}" in line and hint in line


def test_a_whole_section_as_json_is_a_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BORDERLINE_GATE", '{"min_kappa": 0.75}')
    assert main(["config", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["gate"]["min_kappa"] == 0.75


def test_config_show_prints_the_effective_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("BORDERLINE_REDIS__URL", "redis://:hunter2@redis:6379/0")
    monkeypatch.setenv("BORDERLINE_WORKER__BATCH_MAX_SIZE", "64")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    shown = json.loads(out)
    assert shown["redis"]["url"] == "**********"
    assert shown["kafka"]["bootstrap_servers"] == "kafka-1:9092"
    assert shown["worker"]["batch_max_size"] == 64


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("borderline 0.")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens


POLICY_FILE = str(Path(__file__).resolve().parents[4] / "deploy" / "policies" / "v1.yaml")


@pytest.mark.parametrize(
    "argv",
    [
        ["reviewers", "list"],
        ["reviewers", "add", "alice"],
        ["reviewers", "clear", "alice"],
        ["adapters", "list"],
        ["adapters", "show", "a-1"],
        ["adapters", "promote", "a-1", "--reason", "test"],
        ["adapters", "rollback", "--reason", "test"],
        ["review", "stats"],
        ["policy", "show"],
        ["policy", "history"],
        ["policy", "publish", POLICY_FILE],
    ],
)
def test_every_redis_command_against_an_unreachable_redis_isone_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    monkeypatch.setenv("BORDERLINE_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("BORDERLINE_REDIS__URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot reach Redis at 127.0.0.1:{port}" in line
    assert "hunter2" not in line


def test_schemas_export_into_a_file_isone_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["schemas", "export", str(blocker / "schemas")]) == 2
    assert str(blocker) in one_line(capsys.readouterr().err)
