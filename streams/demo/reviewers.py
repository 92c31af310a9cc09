"""`borderline demo --console`: the reviewer console beside the simulated panel, so a person can
label during the run and watch their labels count. The console and its two accounts (a lead and
a reviewer, passwords made up for this run and printed once) are made through the command line,
as an operator would: the demo imports nothing of the console.

The simulated panel answers a request within seconds with the opinions it asks for (one or two,
a second opinion one more), and the console closes an item once it has the opinions it wants. So
that a person has items to label beside the panel, the demo's console wants one opinion more than
the panel gives (`PERSON_OPINIONS`): every requested item stays in the person's queue, highest
priority first, until they label it or it expires."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console

from streams.embedded.launcher import free_port, settings_env
from streams.wire.settings import Settings

__all__ = ["start_console"]

ACCOUNTS = (("lead", "lead"), ("expert", "reviewer"))
# the most opinions the simulated panel gives an item (two for audit draws and the overlap
# sample, a second opinion one more), and one for the person
PERSON_OPINIONS = 4


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
    env.update(settings_env(settings), PYTHONUNBUFFERED="1")
    env["BORDERLINE_CONSOLE__OPINIONS"] = str(PERSON_OPINIONS)
    return env


def start_console(settings: Settings, out: Path, stack: ExitStack, printer: Console) -> str:
    """Start the console on a free loopback port with a lead and a reviewer; return its URL."""
    env = _env(settings)
    passwords = {}
    for name, role in ACCOUNTS:
        passwords[name] = secrets.token_urlsafe(12)
        command = [sys.executable, "-m", "streams.cli", "users", "add", name, "--role", role]
        done = subprocess.run(
            [*command, "--password-stdin"],
            input=passwords[name] + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"users add {name}: {done.stderr.strip()}")
    port = free_port()
    log = (out / "console.log").open("wb")
    stack.callback(log.close)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "console", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(proc.wait, 10)
    stack.callback(proc.terminate)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the console did not start: see {out / 'console.log'}"
                ) from None
            time.sleep(0.2)
    printer.print(f"reviewer console: {url}  (one-time credentials, shown once)")
    for name, role in ACCOUNTS:
        printer.print(f"  {role:<8} user {name!r} password {passwords[name]!r}")
    return url
