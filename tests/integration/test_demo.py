"""The README's main command, `borderline demo`, run as a user runs it (its own embedded broker and
redis-server, the real corpus, worker, collector and trainer processes, the simulated panel), with
the stream reduced: the loop must close (every item decided, labels collected, an adapter for
policy v2 promoted), the report and plots must be written, and nothing may be left running. A
second run, with the reviewer console (`--console`) and interrupted with Ctrl-C, must stop cleanly
too, console included, and still write its report; before the Ctrl-C a person signs in to the
console with the credentials it printed and labels an item the loop asked about."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streams.demo.plots import PLOTS
from streams.embedded.launcher import free_port
from tests.waiting import wait_until

from .conftest import TEST_KAFKA
from .helpers import samples

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _env(model_dir: Path, tmp: Path, marker: str, metrics_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "BORDERLINE_MODEL__DIR": str(model_dir),
            "BORDERLINE_DATA_DIR": str(REPO / ".borderline" / "data"),
            "BORDERLINE_WORKER__ADAPTER_CACHE_DIR": str(tmp / "adapters"),
            "BORDERLINE_METRICS__PORT": str(metrics_port),
            "BL_DEMO_TEST_RUN": marker,  # every process the demo starts inherits it
            # the test processes' consumer-group timing (tests/integration/conftest.py)
            **{f"BORDERLINE_KAFKA__{k.upper()}": str(v) for k, v in TEST_KAFKA.items()},
        }
    )
    return env


def _left_behind(marker: str) -> list[str]:
    """Processes still carrying this run's marker in their environment."""
    found = []
    needle = f"BL_DEMO_TEST_RUN={marker}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()!r}")
        except OSError:
            continue
    return found


@pytest.fixture
def marker() -> Iterator[str]:
    """This run's mark on every process the demo starts. After a failed run (a timeout kills
    the demo, not the processes it started in sessions of their own) whatever still carries it
    is killed, so that it does not slow every test after it."""
    mark = uuid.uuid4().hex
    yield mark
    for line in _left_behind(mark):
        with contextlib.suppress(OSError):
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _decided(port: int) -> float:
    """Items decided so far by the worker whose /metrics is on ``port`` (0 before it serves)."""
    try:
        return sum(value for _, value in samples(port, "borderline_items_total"))
    except OSError:
        return 0.0


def _demo(out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", "demo", "--no-live", "--out", str(out), *options]


def test_demo_closes_the_loop_and_leaves_nothing_behind(
    model_dir: Path, tmp_path: Path, marker: str
) -> None:
    base = free_port()
    out = tmp_path / "demo"
    # the loop closing is under test here, not the model: a lower floor for the gate (the
    # candidate must still beat the incumbent by the margin); 600 s to close it, as make test
    # trains beside another test (two test processes) and a refused first candidate costs a round
    options = (
        *("--items", "600", "--rate", "12", "--settle", "600"),
        *("--min-eval-items", "30", "--min-kappa", "0.5"),
    )
    started = time.monotonic()
    done = subprocess.run(
        _demo(out, *options),
        env=_env(model_dir, tmp_path, marker, base),
        cwd=tmp_path,  # not the checkout: faust makes its data folders in the cwd
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.monotonic() - started
    tail = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, tail
    summary = json.loads((out / "summary.json").read_text())
    print(f"demo ran {elapsed:.0f}s: " + json.dumps(summary))
    assert summary["items_in"] == 600
    assert summary["items_decided"] == summary["items_in"]
    assert summary["labels_collected"] > 0
    assert summary["promotions_after_policy_change"] >= 1
    assert summary["final_policy"] == "v2"
    assert summary["final_adapter"] != summary["first_adapter"]
    assert summary["labels_to_promotion"] is not None
    assert summary["final_kappa"] is not None and summary["kappa_before"] is not None
    assert summary["final_kappa"] > summary["kappa_before"]  # the v2 adapter is better on v2
    assert summary["dead_letters"] == 0
    report = (out / "report.md").read_text()
    assert "policy v2 published" in report and "promoted" in report
    for name in PLOTS:
        assert (out / name).stat().st_size > 10_000, name
        assert f"]({name})" in report
    assert _left_behind(marker) == []
    assert not any(_listening(base + k) for k in range(4))


def _label_as_a_person(log: str) -> str:
    """Sign in to the demo's console with the reviewer's printed one-time credentials, as a
    browser does (the form's CSRF token, the session cookie), and label the first item offered;
    its item id."""
    url = re.search(r"reviewer console: (http://\S+)", log)
    found = re.search(r"reviewer\s+user '(\w+)' password '([^']+)'", log)
    assert url and found, log[-3000:]
    user, password = found.groups()
    with httpx.Client(base_url=url.group(1), timeout=10) as web:
        page = web.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf, page
        form = {"username": user, "password": password, "csrf": csrf.group(1)}
        signed = web.post("/login", data=form)
        assert signed.status_code == 303 and signed.headers["location"] == "/review", signed.text
        task: dict[str, str] = {}
        for _ in range(120):  # the loop asks about its first uncertain items within seconds
            page = web.get("/review").text  # claims the next task, as the page does
            task = dict(re.findall(r'name="(csrf|item_id)" value="([^"]+)"', page))
            if "item_id" in task:
                break
            time.sleep(0.5)
        assert "item_id" in task, page
        # as htmx posts it: the answer comes back as the next task, with what was done
        done = web.post(
            "/review/label", data={**task, "label": "benign"}, headers={"HX-Request": "true"}
        )
        assert done.status_code == 200 and "Labelled benign" in done.text, done.text
        return task["item_id"]


def test_ctrl_c_stops_the_demo_cleanly(model_dir: Path, tmp_path: Path, marker: str) -> None:
    base = free_port()
    out = tmp_path / "interrupted"
    log = (tmp_path / "demo.log").open("w+")
    proc = subprocess.Popen(
        # 50 decisions by worker-1 come within seconds; the stream would last 50 s
        _demo(out, "--items", "2000", "--rate", "40", "--console"),
        env=_env(model_dir, tmp_path, marker, base),
        cwd=tmp_path,  # not the checkout: faust makes its data folders in the cwd
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal of its own: Ctrl-C reaches its process group
        # as from a terminal: a test session started in the background (`cmd &` in a script)
        # inherits SIGINT ignored, and Python then leaves it ignored (the demo ran on for 120 s)
        preexec_fn=_sigint_default,
    )
    try:
        wait_until(
            lambda: proc.poll() is not None or "replaying" in Path(log.name).read_text(),
            240,
            0.5,
            "the demo to start replaying",
        )
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        # mid-stream: worker-1 (its /metrics on the base port) has decided a few dozen items
        wait_until(lambda: _decided(base) >= 50, 120, 0.5, "worker-1 to decide 50 items")
        assert _listening(base), "worker-1 serves /metrics while the demo runs"
        labelled = _label_as_a_person(Path(log.name).read_text())
        print(f"a person labelled {labelled} in the demo's console")
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = Path(log.name).read_text()
    assert code == 130, text[-3000:]
    assert "interrupted" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert 0 < summary["items_decided"] <= summary["items_in"] < 2000
    assert (out / "report.md").is_file()
    assert _left_behind(marker) == []
    assert not any(_listening(base + k) for k in range(4))
