"""Mission Control end to end: a real `fleet run` with [web] on, a real headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium), a real Prometheus scraping
/metrics and a real Alertmanager whose webhook receiver is the fleet. `.ci/run` installs
them; without them (and outside CI) these tests are skipped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.web.auth import LINK, Signer
from tests.anthropic_server import AnthropicServer, tool_use
from tests.botapi_server import BotAPIServer
from tests.fleet import (
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OWNER,
    TOKEN,
    ask,
    fleet_env,
    press,
    query,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet
from tests.webtools import ALERT_TOKEN, CHROMEDRIVER, CHROMIUM, free_port, web_extra

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-haiku-4-5"
heartbeat = "30m"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-haiku-4-5"
authority = ["comment"]
"""


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        if os.environ.get("CI"):
            raise AssertionError(f"{', '.join(missing)} not installed (.ci/run installs them)")
        pytest.skip(f"{', '.join(missing)} not installed")


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}) as server:
        yield server


async def start_fleet(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, *, am_url: str = ""
) -> tuple[InProcessFleet, int]:
    port = free_port()
    config = write_config(
        tmp_path,
        botapi.base_url,
        anthropic_base=anthropic.base_url,
        agents=AGENTS,
        extra=web_extra(port, alertmanager_url=am_url),
    )
    fleet = InProcessFleet(config, env=fleet_env(ALERT_TOKEN=ALERT_TOKEN))
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    await fleet.wait_log("web: serving", timeout=30)
    return fleet, port


async def stop_fleet(fleet: InProcessFleet) -> None:
    assert await fleet.stop() == 0, fleet.log
    assert "Traceback" not in fleet.log, fleet.log
    assert TOKEN not in fleet.log
    assert ALERT_TOKEN not in fleet.log


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


# --- the page in a browser ---------------------------------------------------------------------


class Browser:
    """A headless Chromium; every call runs in a thread so that the test's own servers
    (the Bot API server answering the fleet) keep running meanwhile."""

    def __init__(self, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        options = Options()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,900",
        ):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.shots = shots
        shots.mkdir(exist_ok=True)

    async def get(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def text(self) -> str:
        """The page's visible text, read in one script call: a body element found first and
        read after could belong to the page a click has just replaced."""
        script = "return document.body ? document.body.innerText : '';"
        return str(await asyncio.to_thread(self.driver.execute_script, script))

    async def shows(self, text: str) -> bool:
        return text in await self.text()

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        element = await asyncio.to_thread(self.driver.find_element, By.CSS_SELECTOR, css)
        await asyncio.to_thread(element.click)

    async def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(await asyncio.to_thread(self.driver.find_elements, By.CSS_SELECTOR, css))

    async def script(self, source: str) -> Any:
        return await asyncio.to_thread(self.driver.execute_script, source)

    async def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        assert await asyncio.to_thread(self.driver.save_screenshot, str(path)), path

    def quit(self) -> None:
        self.driver.quit()


async def test_sign_in_from_telegram_see_the_fleet_and_live_activity(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    need(CHROMIUM, CHROMEDRIVER)
    fleet, port = await start_fleet(tmp_path, botapi, anthropic)
    base = f"http://127.0.0.1:{port}"
    browser = await asyncio.to_thread(Browser, tmp_path / "screenshots")
    try:
        # No session: no page.
        await browser.get(f"{base}/")
        assert "Send /web to the fleet's bot" in await browser.text()
        assert "coder" not in await browser.text()
        await browser.shot("signed-out")
        # In a group the link is not given; in the private chat it is.
        group = await ask(botapi, OWNER, "/web", chat_id=FEED_CHAT)
        assert "private chat" in group
        reply = await ask(botapi, OWNER, "/web")
        links = set(re.findall(rf"{re.escape(base)}/signin\?t=[A-Za-z0-9_.-]+", reply))
        assert len(links) == 1, reply
        [link] = links
        await browser.get(link)
        await browser.shot("signin")
        await browser.click("#signin")
        await until(lambda: browser.count("#agents"), "the fleet page")
        fleet_text = await browser.text()
        assert "hub" in fleet_text and "coder" in fleet_text and "Ana (owner)" in fleet_text
        await browser.shot("fleet")

        # An activity line appears without a reload after an /assign.
        await browser.get(f"{base}/activity")
        await browser.script("window.notReloaded = true;")
        anthropic.script(
            tool_use("comment", {"text": "Looking at it."}),
            tool_use("set_status", {"status": "done", "note": "Fixed the typo."}),
        )
        botapi.push_message(OWNER, "/assign coder Fix the typo on the login page")
        await until(lambda: browser.count("#activity li.new"), "a live activity line", 60)
        assert await browser.script("return window.notReloaded === true;")
        assert "coder" in await browser.text()
        await browser.shot("activity")
        await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 1", [("done",)], 60)

        for name, path in (
            ("tasks", "/tasks"),
            ("task", "/tasks/1"),
            ("approvals", "/approvals"),
            ("incidents", "/incidents"),
            ("costs", "/costs"),
            ("jobs", "/jobs"),
        ):
            await browser.get(f"{base}{path}")
            assert "Mission Control" in await browser.text()
            await browser.shot(name)
        await browser.get(f"{base}/tasks/1")
        assert "Fixed the typo." in await browser.text()
        await browser.get(f"{base}/jobs")
        assert "telegram-poll" in await browser.text()

        # The link works once; an expired one is refused too.
        await browser.get(link)
        await browser.click("#signin")
        # The click posts a form: wait for the page that answers it, not the one clicked.
        await until(lambda: browser.shows("used already"), "the refusal of a used link")
        [(key,)] = query(fleet.config, "SELECT value FROM web_keys WHERE name = 'signing'")
        old = Signer(key).issue(LINK, OWNER, 300, now=time.time() - 600)
        await browser.get(f"{base}/signin?t={old}")
        assert "not valid or has expired" in await browser.text()
        await browser.shot("refused")
        assert len(list((tmp_path / "screenshots").glob("*.png"))) == 11
    finally:
        await asyncio.to_thread(browser.quit)
    await stop_fleet(fleet)


# --- Prometheus and Alertmanager ---------------------------------------------------------------


async def start(program: str, *args: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            program, *args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def get_json(url: str) -> Any:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            if response.status != 200:
                return None
            return await response.json()
    except aiohttp.ClientError:
        return None


async def test_prometheus_scrapes_the_runs_counter(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    need("prometheus")
    fleet, port = await start_fleet(tmp_path, botapi, anthropic)
    anthropic.script(
        tool_use("comment", {"text": "Rotating."}),
        tool_use("set_status", {"status": "done", "note": "Rotated the logs."}),
    )
    botapi.push_message(OWNER, "/assign coder Rotate the logs")
    await wait_query(
        fleet.config,
        "SELECT status FROM runs WHERE agent_id = 'coder' AND status != 'skipped'",
        [("succeeded",)],
        60,
    )
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fleet
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
    )
    prometheus = await start(
        "prometheus",
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        log=tmp_path / "prometheus.log",
    )
    try:
        promql = urllib.parse.quote('fleet_runs_total{agent="coder",status="succeeded"}')
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={promql}"

        async def runs() -> Any:
            body = await get_json(url)
            return body and body["data"]["result"]

        [series] = await until(runs, "the runs counter in Prometheus", 60)
        assert series["metric"]["job"] == "fleet"
        assert float(series["value"][1]) >= 1
    finally:
        await stop(prometheus)
    await stop_fleet(fleet)


async def test_alertmanager_alert_reaches_the_feed_silence_and_resolve(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    need("prometheus-alertmanager")
    am_port = free_port()
    am = f"http://127.0.0.1:{am_port}"
    fleet_port = free_port()
    (tmp_path / "alertmanager.yml").write_text(
        f"""
route:
  receiver: fleet
  group_by: ["alertname", "instance"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: fleet
    webhook_configs:
      - url: "http://127.0.0.1:{fleet_port}/hooks/alertmanager/prom"
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: "{ALERT_TOKEN}"
"""
    )
    manager = await start(
        "prometheus-alertmanager",
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",
        log=tmp_path / "alertmanager.log",
    )
    try:
        await until(lambda: get_json(f"{am}/api/v2/status"), "Alertmanager up", 30)
        port = free_port()
        assert port  # the fleet listens on fleet_port, which Alertmanager's config names
        config = write_config(
            tmp_path,
            botapi.base_url,
            anthropic_base=anthropic.base_url,
            agents=AGENTS,
            extra=web_extra(fleet_port, alertmanager_url=am),
        )
        fleet = InProcessFleet(config, env=fleet_env(ALERT_TOKEN=ALERT_TOKEN))
        await fleet.start()
        await botapi.wait_until_polling(timeout=30)
        await fleet.wait_log("web: serving", timeout=30)

        alert = {
            "labels": {"alertname": "DiskFull", "severity": "warning", "instance": "db1"},
            "annotations": {"summary": "disk 95% full"},
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{am}/api/v2/alerts", json=[alert]) as response,
        ):
            assert response.status == 200, await response.text()
        [sent] = await botapi.wait_for_call(
            "sendMessage",
            lambda c: (
                c.params.get("message_thread_id") == ALERTS_TOPIC
                and "DiskFull" in c.params["text"]
            ),
            timeout=60,
        )
        buttons = json.loads(json.dumps(sent.params["reply_markup"]))["inline_keyboard"]
        labels = [b["text"] for row in buttons for b in row]
        assert labels == ["Ack", "Resolve", "Silence 1h", "Silence 4h"]
        silence_data = next(
            b["callback_data"] for row in buttons for b in row if b["text"] == "Silence 1h"
        )
        message_id = next(
            m["message_id"] for m in botapi.sent_messages(FEED_CHAT) if "DiskFull" in m["text"]
        )
        answer = await press(botapi, OWNER, silence_data, message_id)
        assert "silenced" in answer

        async def silences() -> Any:
            found = await get_json(f"{am}/api/v2/silences")
            return [s for s in found or [] if s["status"]["state"] == "active"]

        [silence] = await until(silences, "a silence in Alertmanager", 30)
        assert silence["createdBy"] == "Ana"
        matchers = {m["name"]: m["value"] for m in silence["matchers"]}
        assert matchers == alert["labels"]
        [(silence_id,)] = query(config, "SELECT silence_id FROM external_alerts")
        assert silence_id == silence["id"]

        # Alertmanager says the alert is resolved: the incident is resolved, the feed hears it.
        async with aiohttp.ClientSession() as session:
            async with session.delete(f"{am}/api/v2/silence/{silence['id']}") as response:
                assert response.status == 200
            ended = {**alert, "endsAt": "2020-01-01T00:00:00Z"}
            async with session.post(f"{am}/api/v2/alerts", json=[ended]) as response:
                assert response.status == 200
        await wait_query(config, "SELECT status FROM incidents", [("resolved",)], 60)
        await botapi.wait_for_call(
            "sendMessage",
            lambda c: (
                c.params["chat_id"] == FEED_CHAT and "prom says resolved" in c.params["text"]
            ),
            timeout=30,
        )
        await stop_fleet(fleet)
    finally:
        await stop(manager)
