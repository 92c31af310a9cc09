"""Child-process plumbing for the embedded services: free ports, liveness, process-group signals,
log tails."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
from pathlib import Path
from typing import Literal

_LOG_TAIL_LINES = 5

HOST = "127.0.0.1"

ServiceName = Literal["tansu", "redis"]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def pid_alive(pid: int) -> bool:
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


def runs_binary(pid: int, binary: str) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        return not Path("/proc/self/exe").exists()  # no procfs: trust the pid
    except OSError:
        return True  # not ours to inspect: cannot tell, assume it is
    return exe.removesuffix(" (deleted)") == os.path.realpath(binary)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc.strerror})"
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line][-_LOG_TAIL_LINES:]
    return " | ".join(lines) if lines else "(log empty)"


def one_line(text: str) -> str:
    return " ".join(text.split())
