"""The watchdog: jobs that hang or raise, stale leases, a wrong clock, and `fleet watchdog
--once` noticing from outside that `fleet run` stopped."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select

from bot.config import Config, load_config
from bot.scheduler import Scheduler
from bot.watchdog import Watchdog, find_problems
from storage.db import Database
from storage.models import InboxMessage, Incident, Run
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    TOKEN,
    run_cli,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet


@pytest.fixture
async def db_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Config, Database]]:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    db = Database(config.database.url)
    await db.migrate()
    yield config, db
    await db.dispose()


async def incidents_now(db: Database) -> dict[str, Incident]:
    async with db.session() as session:
        found = await session.execute(select(Incident).order_by(Incident.id))
        return {i.fingerprint: i for i in found.scalars()}


async def wait_for(db: Database, done: object, timeout: float = 30.0) -> dict[str, Incident]:
    assert callable(done)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await incidents_now(db)
        if done(found):
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"watchdog incidents after {timeout} s: {sorted(found)}")
        await asyncio.sleep(0.1)


async def test_a_job_that_hangs_or_raises_is_reported_within_two_intervals(
    db_config: tuple[Config, Database],
) -> None:
    config, db = db_config
    scheduler = Scheduler(db)
    release = asyncio.Event()

    async def hangs() -> None:
        await release.wait()

    async def raises() -> None:
        raise RuntimeError("disk on fire")

    async def works() -> None:
        return None

    for job_id, func in (("hangs", hangs), ("raises", raises), ("works", works)):
        scheduler.every(job_id, 1, func)
    watchdog = Watchdog(config, db, scheduler.intervals)
    scheduler.every("watchdog", 1, watchdog.run)
    scheduler.start()
    try:
        found = await wait_for(
            db, lambda f: {"watchdog:job:hangs", "watchdog:job:raises"} <= set(f)
        )
        hung, failed = found["watchdog:job:hangs"], found["watchdog:job:raises"]
        assert "still running (hung?)" in hung.title
        assert "last error: RuntimeError: disk on fire" in failed.title
        assert "watchdog:job:works" not in found
        # Late means more than two intervals (2 s) without a success; the watchdog runs every
        # second, so the report comes a little after that (the bound only has to tell "two
        # intervals" from "much later").
        for incident in (hung, failed):
            assert incident.opened_at - watchdog.started < timedelta(seconds=2 + 1 + 5)
            assert incident.severity == "P2" and incident.source == "watchdog"
        async with db.session() as session:
            notices = (await session.execute(select(InboxMessage))).scalars().all()
        assert sorted(n.body.split(":")[1].split("(")[0].strip() for n in notices) == [
            "job hangs",
            "job raises",
        ]
        assert {n.agent_id for n in notices} == {"hub"} and {n.kind for n in notices} == {
            "oversight"
        }

        release.set()  # the hung job finishes; its next runs succeed
        found = await wait_for(db, lambda f: f["watchdog:job:hangs"].status == "resolved")
        assert found["watchdog:job:raises"].status == "open"
    finally:
        release.set()
        await scheduler.shutdown(5)


async def test_stale_leases_and_a_wrong_clock_are_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_config: tuple[Config, Database]
) -> None:
    _, db = db_config

    async def date_header(_request: web.Request) -> web.Response:
        late = datetime.now(UTC) - timedelta(minutes=5)
        return web.Response(headers={"Date": format_datetime(late, usegmt=True)})

    app = web.Application()
    app.router.add_route("HEAD", "/", date_header)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        config = load_config(
            write_config(
                tmp_path,
                "http://127.0.0.1:9",
                extra=f'[watchdog]\nclock_url = "http://127.0.0.1:{port}/"\n',
            )
        )
        async with db.session() as session:
            now = datetime.now(UTC)
            session.add(
                Run(
                    agent_id="coder",
                    trigger="manual",
                    status="running",
                    lease_owner="gone",
                    lease_expires_at=now - timedelta(hours=1),
                    started_at=now - timedelta(hours=1),
                )
            )
            # The hub beats every 30 min; its last successful heartbeat was 3 h ago.
            session.add(
                Run(
                    agent_id="hub",
                    trigger="schedule",
                    status="succeeded",
                    started_at=now - timedelta(hours=3),
                    finished_at=now - timedelta(hours=3),
                )
            )
        problems = await find_problems(db, config, expected={}, since=None)
    finally:
        await runner.cleanup()
    by_key = {p.key: p.text for p in problems}
    assert by_key["lease:1"].startswith("run #1 of coder holds a lease that expired")
    # The Date header has whole seconds: 300 s, or 301 s when cut just before a second ends.
    assert re.match(r"the clock is 30[01] s ahead of http://127\.0\.0\.1:", by_key["clock"])
    assert by_key["heartbeat:hub"] == (
        "agent hub has had no successful heartbeat for 3 h (heartbeat 30m)"
    )
    assert set(by_key) == {"lease:1", "clock", "heartbeat:hub"}


def to_alerts(call: Call) -> bool:
    return bool(
        call.params.get("chat_id") == FEED_CHAT
        and call.params.get("message_thread_id") == ALERTS_TOPIC
    )


async def test_watchdog_once_reports_a_stopped_fleet_run(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url, extra='[watchdog]\nevery = "250ms"\n')
    fleet = InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    await wait_query(
        config,
        "SELECT count(*) FROM job_beats WHERE job_id IN ('watchdog', 'telegram-poll') "
        "AND last_success IS NOT NULL",
        [(2,)],
        timeout=30,
    )
    code, out = await run_cli("watchdog", "--once", "--config", str(config))
    assert (code, out.strip().splitlines()[-1]) == (0, "ok"), out
    assert await fleet.stop() == 0

    # Stopped: its beats go stale after two intervals; ask until the watchdog says so.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        code, out = await run_cli("watchdog", "--once", "--config", str(config))
        if code != 0 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert code == 1, out
    assert "job watchdog (every 1 s) has not finished successfully" in out
    [posted] = await botapi.wait_for_call(
        "sendMessage", lambda c: to_alerts(c) and "looks down" in str(c.params["text"])
    )
    assert "job watchdog" in str(posted.params["text"])

    # Run again by the timer: reported in its output, not posted a second time.
    code, out = await run_cli("watchdog", "--once", "--config", str(config))
    assert code == 1 and "already posted" in out
    assert len([c for c in botapi.calls_of("sendMessage") if "looks down" in str(c.params)]) == 1


async def test_fleet_systemd_prints_the_bot_and_watchdog_units(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    code, out = await run_cli("systemd", "--config", str(config))
    assert code == 0
    names = [line.removeprefix("# --- ") for line in out.splitlines() if line.startswith("# --- ")]
    assert names == ["fleet.service", "fleet-watchdog.service", "fleet-watchdog.timer"]
    bot, watchdog, timer = out.split("# --- ")[1:]
    assert "Restart=on-failure" in bot and "KillMode=control-group" in bot
    assert f"run --config {config.resolve()}" in bot
    assert f"watchdog --once --config {config.resolve()}" in watchdog
    assert "OnUnitActiveSec=5min" in timer
