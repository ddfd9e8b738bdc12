"""Faults on the way out, with the real `fleet run`: kill -9 in the middle of sends, 429 / 5xx /
a stalled call / 409 from the Bot API, a burst to many chats under Telegram's limits (the local
Bot API server enforces and counts them), five `fleet send` at once on a new database, and the
watchdog right after a start. Sizes are small and nothing is timed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode

from bot.pacing import GROUP_PER_MINUTE, Pacer
from bot.sender import Sender
from storage import outbox
from storage.db import Database
from storage.models import utcnow
from tests import pg
from tests.botapi_server import BotAPIServer, PacingLimits
from tests.fleet import FEED_CHAT, FleetProcess, query, run_cli, wait_query, write_config
from tests.inproc import InProcessFleet

# Requests on a loaded test machine do not all take the same time from the sender to the server.
LIMITS = PacingLimits(tolerance=0.05)
GROUPS = (-100901, -100902, -100903)
PRIVATE = (2001, 2002, 2003, 2004, 2005, 2006)


def db_of(config: Path) -> Database:
    return Database(f"sqlite+aiosqlite:///{config.parent / 'fleet.db'}")


async def queue(config: Path, messages: list[tuple[int, str]]) -> None:
    """Queue (chat, text) rows the way the rest of the fleet does, in one transaction."""
    db = db_of(config)
    try:
        await db.migrate()
        async with db.session() as session:
            for chat, text in messages:
                await outbox.enqueue(session, outbox.Destination(chat), text)
    finally:
        await db.dispose()


def burst(per_chat: int, chats: tuple[int, ...] = PRIVATE + GROUPS) -> list[tuple[int, str]]:
    """`per_chat` messages to each chat, interleaved; every fifth is two parts long."""
    out: list[tuple[int, str]] = []
    for i in range(per_chat):
        for chat in chats:
            text = f"m{i} to {chat}"
            if i % 5 == 4:
                text += "\n" + "x" * 4200  # split into two messages
            out.append((chat, text))
    return out


def heads(botapi: BotAPIServer, chat: int) -> list[str]:
    """The first line of each message the chat got (parts after the first start with x)."""
    return [t.split("\n", 1)[0] for t in botapi.sent_texts(chat) if not t.startswith("x")]


def expected(messages: list[tuple[int, str]], chat: int) -> list[str]:
    return [t.split("\n", 1)[0] for c, t in messages if c == chat]


async def wait_all_sent(config: Path, count: int, timeout: float = 120.0) -> None:
    await wait_query(
        config, "SELECT count(*) FROM outbox WHERE status = 'sent'", [(count,)], timeout=timeout
    )


@pytest.fixture
async def started(fleet_config: Path, botapi: BotAPIServer) -> AsyncIterator[InProcessFleet]:
    """A fleet (in the test's process) under Telegram's limits; must stop cleanly (exit 0, no
    traceback)."""
    botapi.enforce_limits(LIMITS)
    process = InProcessFleet(fleet_config)
    await process.start()
    await botapi.wait_until_polling(timeout=30)
    yield process
    code = await process.stop()
    assert code == 0, process.log
    assert "Traceback" not in process.log, process.log


async def test_a_burst_to_many_chats_is_delivered_in_order_within_the_limits(
    started: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    messages = burst(6)
    await queue(fleet_config, messages)
    await wait_all_sent(fleet_config, len(messages))
    assert botapi.pacing_violations == []
    for chat in PRIVATE + GROUPS:
        assert heads(botapi, chat) == expected(messages, chat)
    assert botapi.errors == []


async def test_kill_9_during_sends_loses_nothing_and_logs_the_possible_duplicate(
    fleet_config: Path, botapi: BotAPIServer
) -> None:
    botapi.enforce_limits(LIMITS)
    first = FleetProcess(fleet_config)
    await first.start()
    await botapi.wait_until_polling(timeout=30)
    messages = burst(4)
    await queue(fleet_config, messages)
    await botapi.wait_for_call("sendMessage", count=10, timeout=30)
    botapi.stall("sendMessage", 60)  # the next send hangs: it is in flight at the kill
    while botapi.stalls_left("sendMessage"):
        await asyncio.sleep(0.02)
    await first.kill()
    botapi.clear_faults()

    second = InProcessFleet(fleet_config)
    await second.start()
    await wait_all_sent(fleet_config, len(messages))
    assert await second.stop() == 0, second.log
    assert "may show twice" in second.log
    for chat in PRIVATE + GROUPS:
        got = heads(botapi, chat)
        # In order; a message may show twice only where the kill cut its send short.
        assert list(dict.fromkeys(got)) == expected(messages, chat)
    # At most one part per chat was in flight at the kill.
    shown = sum(len(heads(botapi, chat)) for chat in PRIVATE + GROUPS)
    assert shown <= len(messages) + len(PRIVATE + GROUPS)
    assert botapi.pacing_violations == []


async def test_429_and_5xx_are_waited_out_and_each_message_arrives_once(
    started: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    botapi.fail_next("sendMessage", status=429, retry_after=1, times=2)
    messages = burst(2, PRIVATE[:3])
    await queue(fleet_config, messages)
    await wait_all_sent(fleet_config, len(messages))
    botapi.fail_next("sendMessage", status=502, times=2)
    more = [(PRIVATE[0], "after the 502s"), (PRIVATE[1], "another")]
    await queue(fleet_config, more)
    await wait_all_sent(fleet_config, len(messages) + len(more))
    for chat in PRIVATE[:3]:
        assert heads(botapi, chat) == expected(messages + more, chat)
    assert botapi.pacing_violations == []


async def test_a_stalled_call_holds_up_only_its_own_chat(
    started: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    botapi.stall("sendMessage", 60)
    await queue(fleet_config, [(PRIVATE[0], "stuck"), (PRIVATE[0], "behind it")])
    while botapi.stalls_left("sendMessage"):
        await asyncio.sleep(0.02)
    await queue(fleet_config, [(PRIVATE[1], "free"), (GROUPS[0], "free too")])
    await botapi.wait_for_call("sendMessage", lambda c: c.params["chat_id"] == PRIVATE[1])
    await botapi.wait_for_call("sendMessage", lambda c: c.params["chat_id"] == GROUPS[0])
    assert botapi.sent_texts(PRIVATE[0]) == []  # still waiting for its answer
    assert query(fleet_config, "SELECT status FROM outbox WHERE text = 'behind it'") == [
        ("pending",)
    ]


async def test_409_on_polling_does_not_stop_delivery(
    started: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    botapi.fail_next("getUpdates", status=409, times=3)
    messages = burst(2, (PRIVATE[0], GROUPS[0]))
    await queue(fleet_config, messages)
    await wait_all_sent(fleet_config, len(messages))
    assert botapi.pacing_violations == []


async def test_group_pacing_is_read_back_after_a_restart(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    """What a process killed right after 20 messages to a group leaves: the next sender waits
    for the minute to pass instead of sending a 21st."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    await db.migrate()
    group = GROUPS[0]
    now = utcnow()
    async with db.session() as session:
        for i in range(GROUP_PER_MINUTE):
            await outbox.record_send(session, group, now - timedelta(seconds=30 - i))
        await outbox.enqueue(session, outbox.Destination(group), "the 21st")
    bot = Bot(
        botapi.token,
        session=botapi.make_session(),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )
    sender = Sender(bot, db, pacer=Pacer())
    try:
        delay = await sender.deliver_due()
    finally:
        await bot.session.close()
        await db.dispose()
    assert botapi.sent_texts(group) == []
    assert delay > 0
    assert sender.pacer.wait_for(group, time.monotonic()) > 20


async def test_five_sends_at_once_on_a_new_database_all_queue(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url)
    results = await asyncio.gather(
        *(
            run_cli("send", "--config", str(config), "--feed", "alerts", f"alert {i}")
            for i in range(5)
        )
    )
    for code, out in results:
        assert code == 0, out
    rows = query(config, "SELECT text FROM outbox ORDER BY id")
    assert sorted(text for (text,) in rows) == [f"alert {i}" for i in range(5)]


async def test_watchdog_once_right_after_a_start_reports_nothing_then_a_kill(
    fleet_config: Path, botapi: BotAPIServer
) -> None:
    process = FleetProcess(fleet_config)
    await process.start()
    await botapi.wait_until_polling(timeout=30)
    code, out = await run_cli("watchdog", "--once", "--config", str(fleet_config))
    assert (code, out.strip().splitlines()[-1]) == (0, "ok"), out
    await process.kill()
    # telegram-poll (every 2 s) is late two intervals after its last success: ask until then.
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        code, out = await run_cli("watchdog", "--once", "--config", str(fleet_config))
        if code != 0 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert code == 1, out
    assert "job telegram-poll (every 2 s) has not finished successfully" in out


async def test_a_storm_of_direct_replies_stays_within_the_overall_limit(
    started: InProcessFleet, botapi: BotAPIServer
) -> None:
    strangers = range(7001, 7046)  # each gets one refusal: 45 replies at once
    for user in strangers:
        botapi.push_message(user, "/status")
    await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] in strangers, count=45, timeout=60
    )
    assert botapi.pacing_violations == []


async def test_five_schema_set_ups_at_once_on_a_new_postgresql_database() -> None:
    pg.require_pg_url()
    async with pg.temporary_database("delivery") as url:

        async def send(i: int) -> None:
            db = Database(url)
            try:
                await db.migrate()
                async with db.session() as session:
                    await outbox.enqueue(session, outbox.Destination(FEED_CHAT), f"alert {i}")
            finally:
                await db.dispose()

        await asyncio.gather(*(send(i) for i in range(5)))
        db = Database(url)
        try:
            async with db.session() as session:
                rows = await outbox.unsent(session)
        finally:
            await db.dispose()
    assert sorted(r.text for r in rows) == [f"alert {i}" for i in range(5)]
