"""Health checks end to end: the real `fleet run` probes local HTTP and TCP servers that go down
and come back, opens one incident after the threshold, runs the recovery command within its
hourly limit, posts through the alerts feed (grouped) and answers with a resolved notice.
The alert's buttons and /incidents, /ack, /silence work against the same rows."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.config import CheckConfig
from bot.middlewares import NOT_ON_MESSAGE
from integrations.checks import probe, run_command
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    ALERTS_TOPIC,
    FEED_CHAT,
    OPERATOR,
    VIEWER,
    ask,
    press,
    query,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


class Health:
    """A local HTTP server on a fixed port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def up(self) -> None:
        app = web.Application()
        app.router.add_get("/health", _ok)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def down(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def health() -> AsyncIterator[Health]:
    server = Health()
    await server.up()
    yield server
    await server.down()


def to_alerts(call: Call) -> bool:
    return bool(
        call.params.get("chat_id") == FEED_CHAT
        and call.params.get("message_thread_id") == ALERTS_TOPIC
    )


def alerts_texts(botapi: BotAPIServer) -> list[str]:
    return [str(c.params["text"]) for c in botapi.calls_of("sendMessage") if to_alerts(c)]


async def test_http_check_down_and_up_one_incident_limited_recovery_resolved_notice(
    tmp_path: Path, botapi: BotAPIServer, health: Health
) -> None:
    recovered = tmp_path / "recover.log"
    config = write_config(
        tmp_path,
        botapi.base_url,
        extra=f"""
[alerting]
group_wait = "1s"
group_interval = "1s"

[[checks]]
id = "site"
http = "http://127.0.0.1:{health.port}/health"
expect_text = "ok"
every = "1s"
timeout = "2s"
failures_before_alert = 2
successes_before_resolve = 2
recover = "echo attempt >> {recovered}; echo still broken; exit 3"
recover_max_per_hour = 2
""",
    )
    fleet = InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    await wait_query(
        config, "SELECT up FROM check_state WHERE consecutive_successes >= 2", [(1,)], timeout=20
    )
    assert query(config, "SELECT count(*) FROM incidents") == [(0,)]

    await health.down()
    [alert] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: to_alerts(c) and "#1 site:" in str(c.params["text"]),
        timeout=30,
    )
    assert "cannot connect to 127.0.0.1" in alert.params["text"]
    keyboard = json.loads(json.dumps(alert.params["reply_markup"]))["inline_keyboard"]
    assert [b["text"] for row in keyboard for b in row] == [
        "Ack",
        "Resolve",
        "Silence 1h",
        "Silence 4h",
    ]
    # The recovery command ran after the threshold, reported each time, and stops at 2/hour.
    await botapi.wait_for_call(
        "sendMessage",
        lambda c: to_alerts(c) and "attempt 2 of at most 2" in str(c.params["text"]),
        timeout=30,
    )
    report = next(t for t in alerts_texts(botapi) if "attempt 1 of at most 2" in t)
    assert "failed" in report and "exit 3" in report and "still broken" in report
    [(failures,)] = query(config, "SELECT consecutive_failures FROM check_state")
    await wait_query(
        config,
        f"SELECT consecutive_failures >= {failures + 5} FROM check_state",
        [(1,)],
        timeout=30,
    )
    assert recovered.read_text().splitlines() == ["attempt", "attempt"]
    assert query(config, "SELECT count(*), min(status) FROM incidents") == [(1, "open")]

    await health.up()
    [notice] = await botapi.wait_for_call(
        "sendMessage", lambda c: to_alerts(c) and "Resolved" in str(c.params["text"]), timeout=30
    )
    assert notice.params["reply_parameters"]["message_id"] == alert.result["message_id"]
    assert query(config, "SELECT count(*), min(status), min(resolved_by) FROM incidents") == [
        (1, "resolved", "check:site")
    ]
    # Exactly one alert, one resolved notice, two recovery reports.
    assert len([t for t in alerts_texts(botapi) if t.startswith("🟡 <b>P2</b> #1 site:")]) == 1
    assert len([t for t in alerts_texts(botapi) if "Resolved" in t]) == 1
    assert len([t for t in alerts_texts(botapi) if "Recovery of" in t]) == 2
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def test_twenty_checks_failing_within_group_wait_make_one_message(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    alive = listener.sockets[0].getsockname()[1]
    dead = [free_port() for _ in range(20)]
    checks = "".join(
        f'[[checks]]\nid = "svc{i:02d}"\ntcp = "127.0.0.1:{port}"\nevery = "250ms"\n'
        "failures_before_alert = 1\n"
        for i, port in enumerate(dead)
    )
    config = write_config(
        tmp_path,
        botapi.base_url,
        extra=f"""
[alerting]
group_wait = "10s"
group_interval = "1h"

[[checks]]
id = "alive"
tcp = "127.0.0.1:{alive}"
every = "250ms"
failures_before_alert = 1

{checks}""",
    )
    fleet = InProcessFleet(config)
    await fleet.start()
    try:
        await botapi.wait_until_polling(timeout=30)
        [alert] = await botapi.wait_for_call(
            "sendMessage",
            lambda c: to_alerts(c) and "incidents" in str(c.params["text"]),
            timeout=40,
        )
        text = str(alert.params["text"])
        assert "20 incidents" in text
        assert all(f"svc{i:02d}" in text for i in range(20))
        assert "alive" not in text
        assert query(config, "SELECT count(DISTINCT alert_key), count(*) FROM incidents") == [
            (1, 20)
        ]
        assert query(config, "SELECT up FROM check_state WHERE check_id = 'alive'") == [(1,)]

        # One press on the group's Ack acknowledges all twenty; a viewer may not press.
        data = json.loads(json.dumps(alert.params["reply_markup"]))["inline_keyboard"][0][0][
            "callback_data"
        ]
        message_id = alert.result["message_id"]
        refused = await press(botapi, VIEWER, data, message_id)
        assert "operator" in refused
        after = botapi.mark()
        answer = await press(botapi, OPERATOR, data, message_id)
        assert "acknowledged" in answer
        # The card shows its current state only: acknowledged, so no Ack button any more.
        [edit] = await botapi.wait_for_call(
            "editMessageText", lambda c: c.params["message_id"] == message_id, after=after
        )
        keyboard = edit.params["reply_markup"]["inline_keyboard"]
        assert [b["text"] for row in keyboard for b in row] == [
            "Resolve",
            "Silence 1h",
            "Silence 4h",
        ]
        assert str(edit.params["text"]).count("☑️") == 1
        assert query(config, "SELECT count(*) FROM incidents WHERE status = 'acknowledged'") == [
            (20,)
        ]
        # The acknowledged alert has no Ack button any more: a second Ack changes nothing.
        again = await press(botapi, OPERATOR, data, message_id)
        assert again == NOT_ON_MESSAGE
        for forged in ("inc:ack:9999", f"inc:ack:{2**40}", "inc:ack:-1", "inc:nuke:1"):
            assert await press(botapi, OPERATOR, forged, message_id) == NOT_ON_MESSAGE

        reply = await ask(botapi, OPERATOR, "/silence svc03 2h")
        assert "Silenced svc03" in reply and "1 open incident" in reply
        listing = await ask(botapi, VIEWER, "/incidents")
        assert "silenced until" in listing and listing.count("acknowledged") == 19
        assert listing.startswith("<b>Incidents</b> · Times in CE")  # the zone, once
        status = await ask(botapi, VIEWER, "/status")
        assert "Silences: svc03" in status
        assert "operator" in await ask(botapi, VIEWER, "/ack 1")
        assert "Usage: /resolve" in await ask(botapi, OPERATOR, "/resolve x")
        assert "resolved" in await ask(botapi, OPERATOR, "/resolve 1")
        assert "nothing changed" in await ask(botapi, OPERATOR, "/resolve 1")
        [resolved] = await botapi.wait_for_call(
            "sendMessage", lambda c: to_alerts(c) and "Resolved: #1 " in str(c.params["text"])
        )
        assert "(Ben)" in resolved.params["text"]
        assert resolved.params["reply_parameters"]["message_id"] == message_id
        # Still exactly one alert message for the burst.
        assert len([t for t in alerts_texts(botapi) if "incidents" in t]) == 1
    finally:
        listener.close()
        assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


# --- probes on their own -----------------------------------------------------------------------


async def test_probes_judge_status_text_latency_commands_and_timeouts(tmp_path: Path) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="ok")

    async def teapot(_request: web.Request) -> web.Response:
        return web.Response(status=418, text="short and stout")

    app = web.Application()
    app.router.add_get("/ok", _ok)
    app.router.add_get("/slow", slow)
    app.router.add_get("/teapot", teapot)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:

        def http(path: str, **more: object) -> CheckConfig:
            return CheckConfig.model_validate({"id": "c", "http": base + path, **more})

        assert (await probe(http("/ok", expect_text="ok"))).ok
        missing = await probe(http("/ok", expect_text="healthy"))
        assert not missing.ok and "without 'healthy'" in missing.detail
        wrong = await probe(http("/teapot"))
        assert (wrong.ok, wrong.detail) == (False, "HTTP 418 (expected 200)")
        assert (await probe(http("/teapot", expect_status=[418]))).ok
        # 500 ms against a 100 ms limit: a failure; against 5 s: fine.
        late = await probe(http("/slow", max_latency="100ms"))
        assert not late.ok and "limit 100ms" in late.detail
        assert (await probe(http("/slow", max_latency="5s"))).ok
    finally:
        await runner.cleanup()

    def cmd(command: str, timeout: str = "10s") -> CheckConfig:
        return CheckConfig(id="c", command=command, timeout=timeout)

    assert (await probe(cmd("true"))).ok
    failed = await probe(cmd("echo nope; exit 4"))
    assert (failed.ok, failed.detail) == (False, "exit 4: nope")
    marker = tmp_path / "survived"
    killed = await probe(cmd(f"sleep 30; touch {marker}", timeout="1s"))
    assert (killed.ok, killed.detail) == (False, "timed out: killed after 1 s")
    assert not marker.exists()
    bad = await probe(CheckConfig(id="c", tcp="no-port-here"))
    assert (bad.ok, bad.detail) == (False, "'no-port-here' is not host:port")
    closed = await probe(CheckConfig(id="c", tcp=f"127.0.0.1:{free_port()}"))
    assert not closed.ok and closed.detail.startswith("cannot connect")


async def test_command_check_leaving_a_child_running_is_not_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:not-for-commands")
    pidfile = tmp_path / "child.pid"
    # The recover command restarts a service: a child that keeps the output pipe open.
    recover = (
        f"{sys.executable} -c 'import time; time.sleep(120)' & echo $! > {pidfile}; "
        'echo "restarted; token: ${TELEGRAM_BOT_TOKEN:-none}"'
    )
    done = await run_command(recover, 60)
    assert (done.exit_code, done.output) == (0, "restarted; token: none\n")
    pid = int(pidfile.read_text())
    os.kill(pid, 0)  # still running: only a real timeout kills the group
    os.kill(pid, signal.SIGKILL)
    long = await probe(
        CheckConfig(id="c", command="seq 1 100000; echo last words; exit 3", timeout="60s")
    )
    assert not long.ok and long.detail.endswith("last words")
