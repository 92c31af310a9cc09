"""The reviewer console in a real headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium offline), against a real console process, the real broker and redis-server
and a real collector process: a reviewer signs in and labels 10 items with the keyboard only, and
the labels reach the label store attributed to that user; hostile item text is shown as text and
runs nothing; a held-down or doubled key labels once; undo; a reviewer gets 403 on the lead page;
the lead sees the reviewer's labels. One browser and one console for the module.

Screenshots go to ``out/console-screenshots/`` in the checkout."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from adapters.labels.store import LabelStore, ReviewedItem
from streams.cli.main import main
from streams.embedded.launcher import WorkerProcess, free_port, settings_env, start_worker
from streams.wire.messages import ReviewReason, ReviewRequest, encode
from streams.wire.settings import Settings
from streams.wire.topics import TopicNames, ensure_topics
from tests.redis_support import redis_client

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "out" / "console-screenshots"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
ITEMS = 12


@dataclass
class Site:
    url: str
    settings: Settings
    driver: WebDriver
    store_prefix: str


def _requests(now: float) -> list[ReviewRequest]:
    out = []
    for i in range(ITEMS):
        text = HOSTILE if i == 0 else f"Item {i}: limited offer, reply to claim your prize {i}"
        out.append(
            ReviewRequest(
                request_id=f"rr-console-{i}",
                item_id=f"c{i:02d}",
                text=text,
                reason=ReviewReason.UNCERTAIN if i % 3 else ReviewReason.BOUNDARY,
                probabilities={"violating": 0.5},
                policy_version="v1",
                priority=1.0 - i / 100,  # c00 first
                requested_at=now,
            )
        )
    return out


async def _send_requests(settings: Settings, requests: list[ReviewRequest]) -> None:
    """As the curator does: the requests recorded in the label store, then on the topic."""
    from aiokafka import AIOKafkaProducer

    assert settings.redis.url is not None
    async with redis_client(settings.redis.url.get_secret_value()) as redis:
        await LabelStore(redis, settings.redis.key_prefix).record_requests(
            "v1",
            [
                ReviewedItem(
                    r.item_id,
                    r.text,
                    None,
                    0.5,
                    r.reason.value,
                    r.requested_at,
                    request_id=r.request_id,
                    policy_version="v1",
                )
                for r in requests
            ],
        )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for r in requests:
            await producer.send_and_wait(
                settings.kafka.topics.review_requests, encode(r), key=r.item_id.encode()
            )
    finally:
        await producer.stop()


def _users(settings: Settings) -> None:
    """Accounts made with the CLI, as an operator does."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("BORDERLINE_"):
                mp.delenv(name)
        for name, value in settings_env(settings).items():
            mp.setenv(name, value)
        for user, role in [("alice", "reviewer"), ("lena", "lead")]:
            mp.setattr(sys, "stdin", io.StringIO(f"{user} password 1\n"))
            assert main(["users", "add", user, "--role", role, "--password-stdin"]) == 0


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"console exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"console not ready: {log.read_text()[-2000:]}")


def _browser() -> WebDriver:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download anything
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


@pytest.fixture(scope="module")
def site(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    tag = uuid.uuid4().hex[:8]
    topics = TopicNames().prefixed(f"t{tag}.")
    settings = Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": services.bootstrap_servers,
                "topics": topics.model_dump(),
                "app_id": f"console-{tag}",
            },
            "redis": {"url": services.redis_url, "key_prefix": f"test-{tag}"},
            "console": {"undo_s": 3.0, "lease_s": 120},
        }
    )
    asyncio.run(ensure_topics(services.bootstrap_servers, topics.all(), 4))
    _users(settings)
    collector: WorkerProcess = start_worker(
        settings, f"c-{tag}", tmp / "collector.log", role="collector"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORDERLINE_")}
    env.update(settings_env(settings), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    log = tmp / "console.log"
    with log.open("wb") as out:
        console = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "console", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    driver = None
    try:
        _wait_http(url, console, log)
        asyncio.run(_send_requests(settings, _requests(time.time())))
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver = _browser()
        yield Site(url, settings, driver, settings.redis.key_prefix)
    finally:
        if driver is not None:
            driver.quit()
        console.terminate()
        try:
            console.wait(timeout=10)
        except subprocess.TimeoutExpired:
            console.kill()
        collector.stop(timeout_s=15)


def _sign_in(site: Site, user: str) -> None:
    d = site.driver
    d.delete_all_cookies()
    d.get(site.url + "/login")
    d.find_element(By.ID, "username").send_keys(user)
    d.find_element(By.ID, "password").send_keys(f"{user} password 1\n")  # Enter submits


def _item(d: WebDriver) -> str:
    """The item on screen, read in one script (htmx may swap the task between two calls)."""
    item = d.execute_script(
        "const t = document.getElementById('task'); return t ? t.dataset.item : '';"
    )
    return str(item or "")


def _text(d: WebDriver, element_id: str) -> str:
    text = d.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
        element_id,
    )
    return str(text or "")


def _wait_item(d: WebDriver, not_this: str | None = None, timeout: float = 10) -> str:
    """The item on screen once one is (and it is not ``not_this``)."""
    WebDriverWait(d, timeout).until(lambda d: _item(d) and _item(d) != not_this)
    return _item(d)


def _press(d: WebDriver, key: str) -> None:
    ActionChains(d).send_keys(key).perform()


async def _votes(settings: Settings, reviewer: str) -> dict[str, str]:
    assert settings.redis.url is not None
    async with redis_client(settings.redis.url.get_secret_value()) as redis:
        every = await LabelStore(redis, settings.redis.key_prefix).all_votes("v1")
    return {item: votes[reviewer] for item, votes in every.items() if reviewer in votes}


def test_a_reviewer_labels_ten_items_with_the_keyboard_only(site: Site) -> None:
    d = site.driver
    _sign_in(site, "alice")
    WebDriverWait(d, 15).until(lambda d: d.find_elements(By.ID, "task"))
    first = _wait_item(d, timeout=20)  # the console has read the requests from the topic
    # the hostile item (highest priority) is shown as text, and ran nothing
    assert first == "c00"
    assert _text(d, "item-text") == HOSTILE
    assert d.title != "pwned" and not d.find_elements(By.CSS_SELECTOR, "#task img")
    assert not d.find_elements(By.ID, "score")  # the model's score is hidden from reviewers
    d.save_screenshot(str(SHOTS / "review-hostile-text.png"))

    # a held-down key (auto-repeat) and a key pressed twice in a row label one item once
    d.execute_script(
        "document.dispatchEvent(new KeyboardEvent('keydown', {key: '2', repeat: true}));"
    )
    time.sleep(0.3)
    assert _item(d) == "c00"
    d.execute_script(
        "for (const i of [1, 2]) document.dispatchEvent(new KeyboardEvent('keydown', {key: '2'}));"
    )
    second = _wait_item(d, not_this="c00")
    time.sleep(0.5)
    assert _item(d) == second  # the doubled key did not label the next item too

    # undo brings the last item back; label it again
    _press(d, "u")
    assert _wait_item(d, not_this=second) == "c00"
    assert "Undone" in _text(d, "flash")
    _press(d, "2")
    labelled = {"c00": "violating"}
    current = _wait_item(d, not_this="c00")
    for n in range(9):
        key, answer = ("1", "benign") if n % 2 else ("2", "violating")
        if n == 4:
            d.save_screenshot(str(SHOTS / "review-keyboard.png"))
        _press(d, key)
        labelled[current] = answer
        if n < 8:
            current = _wait_item(d, not_this=current)
    assert len(labelled) == 10

    deadline = time.monotonic() + 30
    stored: dict[str, str] = {}
    while time.monotonic() < deadline:
        stored = asyncio.run(_votes(site.settings, "alice"))
        if len(stored) >= 10:
            break
        time.sleep(0.5)
    assert stored == labelled  # every label, attributed to the signed-in user


def test_a_reviewer_gets_403_on_the_lead_page(site: Site) -> None:
    d = site.driver
    _sign_in(site, "alice")
    WebDriverWait(d, 10).until(lambda d: d.find_elements(By.ID, "task"))
    d.get(site.url + "/lead")
    assert _text(d, "message") == "This page is for leads."
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(site.url + "/api/v1/stats")
    assert refused.value.code == 401
    d.save_screenshot(str(SHOTS / "reviewer-403.png"))


def test_the_lead_sees_the_reviewers_labels(site: Site) -> None:
    d = site.driver
    _sign_in(site, "lena")
    WebDriverWait(d, 10).until(lambda d: d.find_elements(By.ID, "reviewers"))
    assert "alice" in _text(d, "reviewers")
    assert "label" in _text(d, "audit")
    d.save_screenshot(str(SHOTS / "lead-view.png"))
