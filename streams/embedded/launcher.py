"""Starting `borderline worker` processes from Python, as the demo, the benchmarks and the tests
do: the settings travel as ``BORDERLINE_*`` environment variables, the output goes to a log file,
and readiness is the worker's own "Ready" line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from models.errors import BorderlineError
from streams.wire.ready import TRAINER_READY, WORKER_READY
from streams.wire.settings import Settings

__all__ = ["LaunchError", "WorkerProcess", "free_port", "settings_env", "start_worker"]


class LaunchError(BorderlineError):
    """A worker process exited or did not become ready."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _flatten(f"{prefix}__{name.upper()}", getattr(value, name), out)
    elif isinstance(value, SecretStr):
        out[prefix] = value.get_secret_value()
    elif value is not None:
        out[prefix] = str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read exactly these settings."""
    out: dict[str, str] = {}
    for name in type(settings).model_fields:
        _flatten(f"BORDERLINE_{name.upper()}", getattr(settings, name), out)
    return out


@dataclass
class WorkerProcess:
    worker_id: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    ready_mark: str = WORKER_READY

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if self.ready_mark in text:
                return
            if self.process.poll() is not None:
                raise LaunchError(
                    f"worker {self.worker_id} exited with {self.process.returncode}; "
                    f"see {self.log}: {text.strip().splitlines()[-1:]}"
                )
            time.sleep(0.2)
        raise LaunchError(
            f"worker {self.worker_id} not ready after {timeout_s:.0f}s; see {self.log}"
        )

    def peak_rss_mb(self) -> float | None:
        """Peak resident memory of the worker (VmHWM), while it runs."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_worker(
    settings: Settings,
    worker_id: str,
    log: Path,
    *,
    metrics_port: int | None = None,
    extra_env: dict[str, str] | None = None,
    wait: bool = True,
    role: str = "worker",
    args: tuple[str, ...] = (),
) -> WorkerProcess:
    """Start ``borderline ROLE --id worker_id [ARGS]`` (a classify ``worker``, the label
    ``collector``, or the ``trainer``, which takes no id) with ``settings``; wait until it is
    ready."""
    port = free_port() if metrics_port is None else metrics_port
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
    env.update(settings_env(settings))
    env["BORDERLINE_METRICS__PORT"] = str(port)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra_env or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            role,
            *(() if role == "trainer" else ("--id", worker_id)),
            *args,
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    mark = TRAINER_READY if role == "trainer" else WORKER_READY
    worker = WorkerProcess(worker_id, process, log, port, mark)
    if wait:
        worker.wait_ready()
    return worker
