"""`borderline services up | down | status`: the embedded services started detached, their pids,
ports and binaries kept in a state file in the state directory, so that later commands (and other
processes) find them, stop them, or report them dead."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from streams.embedded.probes import redis_ping, tcp_open
from streams.embedded.processes import one_line, pid_alive, runs_binary, signal_group
from streams.embedded.services import (
    STOP_GRACE_S,
    Child,
    ServiceEndpoints,
    ServiceError,
    start_all,
    stop_children,
)

__all__ = ["ServiceStatus", "running_endpoints", "services_down", "services_status", "services_up"]


_STATE_FILE = "services.json"


class ServiceStatus(TypedDict):
    pid: int
    port: int
    alive: bool  # the recorded process exists (and is still the recorded binary)
    reachable: bool  # tansu: TCP connect; redis: PING


def services_up(
    state_dir: Path,
    tansu_bin: Path | None = None,
    redis_bin: Path | None = None,
    start_timeout_s: float = 20.0,
) -> ServiceEndpoints:
    """Start detached services that outlive the caller; record them in state_dir/services.json."""
    state_dir = Path(state_dir)
    running = [
        f"{name} pid {rec['pid']} on port {rec['port']}"
        for name, rec in _read_state(state_dir).get("services", {}).items()
        if _is_running(rec)
    ]
    if running:
        raise ServiceError(
            f"services recorded in {state_dir / _STATE_FILE} are still running "
            f"({', '.join(running)}): run `borderline services down` first"
        )
    children: list[Child] = []
    endpoints = start_all(state_dir, tansu_bin, redis_bin, start_timeout_s, children, STOP_GRACE_S)
    state = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bootstrap_servers": endpoints.bootstrap_servers,
        "redis_url": endpoints.redis_url,
        "services": {child.name: child.record() for child in children},
    }
    try:
        _write_state(state_dir, state)
    except BaseException:
        stop_children(children, STOP_GRACE_S)
        raise
    for child in children:
        # Deliberately left running; mark the handle done so its finaliser does not warn.
        child.process.returncode = 0
    return endpoints


def services_down(state_dir: Path, *, grace_s: float = STOP_GRACE_S) -> list[str]:
    """Stop the services recorded in state_dir and remove the record. Returns what was stopped."""
    state_dir = Path(state_dir)
    services: dict[str, dict[str, Any]] = _read_state(state_dir).get("services", {})
    targets = [(name, rec) for name, rec in services.items() if _is_running(rec)]
    for _, rec in targets:
        signal_group(int(rec["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for _, rec in targets:
        pid = int(rec["pid"])
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):
            signal_group(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.02)
    (state_dir / _STATE_FILE).unlink(missing_ok=True)
    return [f"{name} (pid {rec['pid']}, port {rec['port']})" for name, rec in targets]


def running_endpoints(state_dir: Path) -> ServiceEndpoints | None:
    """The endpoints of services started by `services up`, if all of them still run."""
    state = _read_state(Path(state_dir))
    services: dict[str, dict[str, Any]] = state.get("services", {})
    if not services or not all(_is_running(rec) for rec in services.values()):
        return None
    return ServiceEndpoints(str(state["bootstrap_servers"]), str(state["redis_url"]))


def services_status(state_dir: Path) -> dict[str, ServiceStatus]:
    """Pid, port, liveness and reachability of each recorded service; {} if none is recorded."""
    services: dict[str, dict[str, Any]] = _read_state(Path(state_dir)).get("services", {})
    status: dict[str, ServiceStatus] = {}
    for name, rec in services.items():
        port = int(rec["port"])
        alive = _is_running(rec)
        reachable = alive and (redis_ping(port) if name == "redis" else tcp_open(port, 0.5))
        status[name] = ServiceStatus(
            pid=int(rec["pid"]), port=port, alive=alive, reachable=reachable
        )
    return status


def _read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / _STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read {path}: {one_line(str(exc))}; remove it") from None
    if not isinstance(state, dict):
        raise ServiceError(f"cannot read {path}: not a JSON object; remove it")
    return state


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_dir / _STATE_FILE
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _is_running(record: dict[str, Any]) -> bool:
    """The recorded pid is alive and still runs the recorded binary (pids get reused)."""
    pid = int(record["pid"])
    return pid_alive(pid) and runs_binary(pid, str(record["binary"]))
