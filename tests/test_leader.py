"""One leader on PostgreSQL, and the two ledgers that make a takeover run things once: the
update ledger (storage.updates) and the slot ledger (storage.slots), on both backends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiogram import Dispatcher, Router
from aiogram.types import Message
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import text

from bot.cron import crontab_trigger
from bot.leader import Duties, Leadership, NodeRole
from bot.middlewares import DbSessionMiddleware
from bot.poller_lock import AdvisoryLock
from bot.polling import NotLeading, PollMonitor
from bot.scheduler import EPOCH, JobFunc, Scheduler, due_slot
from bot.update_ledger import Receiver, UpdateLedger, replay
from storage import slots, updates
from storage.db import Database, touch
from tests import pg
from tests.botapi_server import BotAPIServer
from tests.fleet import OWNER

pg_database = pg.pg_database

TOKEN = "4242:leader-test"
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest_asyncio.fixture
async def any_db(backend_url: str) -> AsyncIterator[Database]:
    db = Database(backend_url)
    await db.migrate()
    async with db.session() as s:
        await s.execute(text("DELETE FROM telegram_updates"))
        await s.execute(text("DELETE FROM job_slots"))
    yield db
    await db.dispose()


# --- the update ledger ------------------------------------------------------------------------


def payload(update_id: int) -> dict[str, object]:
    return {"update_id": update_id, "message": {"message_id": 1, "text": f"/u{update_id}"}}


async def test_an_update_is_received_once_handled_once_and_its_duplicate_dropped(
    any_db: Database,
) -> None:
    async with any_db.session() as s:
        assert await updates.receive(s, [(1001, payload(1001)), (1002, payload(1002))], "a", T0)
    async with any_db.session() as s:
        # Telegram delivers the batch again (not yet confirmed): nothing new.
        assert await updates.receive(s, [(1002, payload(1002))], "b", T0) == 0
        assert await updates.unhandled(s, T0) == [payload(1001), payload(1002)]
        assert await updates.take(s, 1001, "a", T0)
    async with any_db.session() as s:
        assert not await updates.take(s, 1001, "b", T0)  # handled: dropped
        assert await updates.unhandled(s, T0) == [payload(1002)]
        assert await updates.take(s, 1003, "b", T0)  # fed, not received: recorded here
        assert not await updates.take(s, 1003, "b", T0)
    async with any_db.session() as s:
        rows = (await s.execute(text("SELECT update_id, node FROM telegram_updates"))).all()
    assert sorted(rows) == [(1001, "a"), (1002, "a"), (1003, "b")]


async def test_old_updates_are_pruned_and_not_handled_again(any_db: Database) -> None:
    async with any_db.session() as s:
        await updates.receive(s, [(1, payload(1))], "a", T0 - updates.KEEP - timedelta(minutes=1))
        await updates.receive(s, [(2, payload(2))], "a", T0 - updates.KEEP + timedelta(minutes=1))
    async with any_db.session() as s:
        assert await updates.unhandled(s, T0) == [payload(2)]
        assert await updates.prune(s, T0) == 1
    async with any_db.session() as s:
        assert await updates.take(s, 1, "a", T0)  # forgotten: it would be handled again
        assert await updates.take(s, 2, "a", T0)


async def test_an_update_of_a_node_that_died_mid_update_is_handled_by_the_next(
    pg_database: str,
) -> None:
    # On PostgreSQL the row is taken in the update's own transaction: while the first node
    # holds it uncommitted the second waits; a rollback (the node died) lets the second have it,
    # a commit makes the second drop it.
    one, two = Database(pg_database), Database(pg_database)
    try:
        await one.migrate()
        for update_id, first_commits in ((5001, False), (5002, True)):
            async with one.session() as s:
                await updates.receive(s, [(update_id, payload(update_id))], "a", T0)
            async with one.sessions() as first:
                await first.begin()
                assert await updates.take(first, update_id, "a", T0)

                async def second(update_id: int) -> bool:
                    async with two.session() as s:
                        return await updates.take(s, update_id, "b", T0)

                waiting = asyncio.create_task(second(update_id))
                await asyncio.sleep(0.3)
                assert not waiting.done()  # blocked on the first node's uncommitted row
                if first_commits:
                    await first.commit()
                else:
                    await first.rollback()
            assert await waiting is (not first_commits)
    finally:
        await one.dispose()
        await two.dispose()


# --- the slot ledger --------------------------------------------------------------------------


async def test_a_slot_is_claimed_once(any_db: Database) -> None:
    async with any_db.session() as s:
        assert await slots.claim(s, "watchdog", T0, "a", T0)
        assert not await slots.claim(s, "watchdog", T0, "b", T0)
        assert await slots.claim(s, "watchdog", T0 + timedelta(minutes=1), "b", T0)
        assert await slots.claim(s, "alerts", T0, "b", T0)
    async with any_db.session() as s:
        assert await slots.latest(s, "watchdog") == T0 + timedelta(minutes=1)
        assert await slots.latest(s, "nothing") is None
        assert await slots.claimed(s, "watchdog", T0) == [T0, T0 + timedelta(minutes=1)]


async def test_old_slots_are_pruned(any_db: Database) -> None:
    async with any_db.session() as s:
        await slots.claim(s, "j", T0 - slots.KEEP - timedelta(hours=1), "a", T0)
        await slots.claim(s, "j", T0 - timedelta(hours=1), "a", T0)
    async with any_db.session() as s:
        assert await slots.prune(s, T0) == 1
        assert await slots.claimed(s, "j", T0 - slots.KEEP * 2) == [T0 - timedelta(hours=1)]


def test_due_slot_is_the_latest_fire_time_within_the_lookback() -> None:
    every_minute = IntervalTrigger(seconds=60, start_date=EPOCH, timezone=UTC)
    now = T0 + timedelta(seconds=75)
    assert due_slot(every_minute, now, timedelta(seconds=90)) == T0 + timedelta(seconds=60)
    assert due_slot(every_minute, T0, timedelta(seconds=1)) == T0  # a slot at `now` is due
    assert due_slot(every_minute, now, timedelta(seconds=10)) is None
    nightly = crontab_trigger("30 2 * * *", UTC)
    at = datetime(2026, 12, 5, 2, 30, 20, tzinfo=UTC)
    assert due_slot(nightly, at, timedelta(minutes=5)) == datetime(2026, 12, 5, 2, 30, tzinfo=UTC)
    assert due_slot(nightly, at + timedelta(hours=1), timedelta(minutes=5)) is None


async def test_a_new_leader_runs_a_missed_slot_once_and_a_new_job_not_at_all(
    any_db: Database,
) -> None:
    ran: list[str] = []

    def job(name: str) -> JobFunc:
        async def run() -> None:
            ran.append(name)

        return run

    scheduler = Scheduler(any_db, node="b", catch_up=120, ledger=True)
    scheduler.every("missed", 30, job("missed"))
    scheduler.every("fresh", 30, job("fresh"))
    scheduler.every("checked", 30, job("checked"), everywhere=True)
    now = datetime.now(UTC)
    missed = due_slot(scheduler.fleet_wide["missed"].trigger, now, timedelta(seconds=30))
    assert missed is not None
    async with any_db.session() as s:
        # The old leader ran "missed" one slot before, then died; "fresh" never ran.
        assert await slots.claim(s, "missed", missed - timedelta(seconds=30), "a", now)
        assert await slots.claim(s, "checked", missed - timedelta(seconds=30), "a", now)
    await asyncio.gather(*await scheduler.take_over())
    assert await scheduler.take_over() == []  # a second takeover finds the slot claimed
    assert ran == ["missed"]
    async with any_db.session() as s:
        assert await slots.latest(s, "missed") == missed
        assert await slots.latest(s, "fresh") is None


# --- wakes across nodes ------------------------------------------------------------------------


async def test_a_commit_on_one_node_wakes_the_listeners_of_the_other(pg_database: str) -> None:
    one, two = Database(pg_database), Database(pg_database)
    await one.migrate()
    woken = {"one": asyncio.Event(), "two": asyncio.Event()}
    one.on_commit("outbox", woken["one"].set)
    two.on_commit("outbox", woken["two"].set)
    stop = asyncio.Event()
    relay = asyncio.create_task(two.relay_wakes(stop))
    await asyncio.wait_for(woken["two"].wait(), 10)  # woken once when it starts listening
    woken["two"].clear()

    async with two.session() as s:  # its own commit wakes it directly, not twice
        touch(s, "outbox")
    assert woken["two"].is_set()
    woken["two"].clear()
    await asyncio.sleep(0.3)
    assert not woken["two"].is_set()

    with pytest.raises(RuntimeError):  # a rolled-back transaction wakes nobody
        async with one.session() as s:
            touch(s, "outbox")
            raise RuntimeError
    async with one.session() as s:
        touch(s, "deploys")  # a topic nobody listens to on `two`
    await asyncio.sleep(0.3)
    assert not woken["two"].is_set()

    async with one.session() as s:
        touch(s, "outbox")
    assert woken["one"].is_set()
    await asyncio.wait_for(woken["two"].wait(), 10)
    stop.set()
    await relay
    await one.dispose()
    await two.dispose()


# --- one leader -------------------------------------------------------------------------------


async def test_one_node_leads_and_steps_down_when_its_lock_connection_dies(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.leader")
    dbs = [Database(pg_database), Database(pg_database)]
    nodes = [
        Leadership(AdvisoryLock(db, TOKEN), node=name, takeover=1.5)
        for db, name in zip(dbs, ("a", "b"), strict=True)
    ]
    led: list[str] = []
    stop = asyncio.Event()

    def duties(name: str) -> Duties:
        async def lead(term: asyncio.Event) -> None:
            led.append(name)
            await term.wait()

        return lead

    a = asyncio.create_task(nodes[0].run(stop, duties("a")))
    while not nodes[0].is_leader:
        await asyncio.sleep(0.05)
    b = asyncio.create_task(nodes[1].run(stop, duties("b")))
    await asyncio.sleep(1.0)
    assert (nodes[0].role, nodes[1].role) == (NodeRole.leader, NodeRole.standby)
    assert await nodes[0].alive()
    assert not await nodes[1].alive()

    # The leader's lock connection is cut (as a lost network or a killed server session).
    async with dbs[1].session() as s:
        await s.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'fleet run (%' AND pid <> pg_backend_pid()"
            )
        )
    assert not await nodes[0].alive()  # it steps down at once
    assert nodes[0].role is NodeRole.standby
    # One of them leads again (either may win the free lock), never both at once.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(led) < 2:
        assert loop.time() < deadline, caplog.text
        assert not (nodes[0].is_leader and nodes[1].is_leader)
        await asyncio.sleep(0.02)
    for _ in range(50):
        assert [n.is_leader for n in nodes].count(True) == 1
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(a, b)
    for node in nodes:
        if node.lock is not None:
            await node.lock.release()
    for db in dbs:
        await db.dispose()
    assert "role: leader (node a" in caplog.text
    assert "stepping down" in caplog.text
    assert "role: standby (node a stopped leading" in caplog.text
    assert f"role: leader (node {led[1]}" in caplog.text


# --- polling through the ledger ---------------------------------------------------------------


async def test_a_received_batch_is_replayed_once_and_a_redelivery_dropped(
    tmp_path: Path, botapi: BotAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    await db.migrate()
    leading = True

    async def may_poll() -> bool:
        return leading

    monitor = PollMonitor(before_poll=may_poll, on_updates=Receiver(db, "a"))
    bot = botapi.make_bot()
    bot.session.middleware(monitor)
    handled: list[str] = []
    router = Router()

    @router.message()
    async def note(message: Message) -> None:
        handled.append(message.text or "")

    dp = Dispatcher()
    dp.workflow_data.update(db=db)
    dp.update.outer_middleware(DbSessionMiddleware())
    dp.update.outer_middleware(UpdateLedger("b"))
    dp.include_router(router)
    try:
        first = botapi.push_message(OWNER, "/one")
        botapi.push_message(OWNER, "/two")
        # The leader gets the batch and dies before handling it (nothing confirms it yet).
        batch = await bot.get_updates(timeout=0)
        assert [u.update_id for u in batch] == [first, first + 1]
        assert monitor.polls == 1

        assert await replay(dp, bot, db) == 2  # the next leader handles both
        assert handled == ["/one", "/two"]
        assert await replay(dp, bot, db) == 0
        # Telegram delivers the unconfirmed batch again: recorded already, dropped when fed.
        for update in await bot.get_updates(timeout=0):
            await dp.feed_update(bot, update)
        assert handled == ["/one", "/two"]
        assert f"update {first} dropped: it was handled already" in caplog.text

        leading = False  # lost the lock: no getUpdates reaches Telegram
        polls = len(botapi.calls_of("getUpdates"))
        with pytest.raises(NotLeading):
            await bot.get_updates(timeout=0)
        assert len(botapi.calls_of("getUpdates")) == polls
    finally:
        await bot.session.close()
        await db.dispose()


async def test_a_scheduled_run_does_not_start_beside_a_catch_up_of_the_same_job(
    any_db: Database,
) -> None:
    release = asyncio.Event()
    runs = 0

    async def slow() -> None:
        nonlocal runs
        runs += 1
        await release.wait()

    scheduler = Scheduler(any_db, node="b", catch_up=120, ledger=True)
    scheduler.every("triage:work", 30, slow)
    now = datetime.now(UTC)
    slot = due_slot(scheduler.fleet_wide["triage:work"].trigger, now, timedelta(seconds=30))
    assert slot is not None
    async with any_db.session() as s:
        await slots.claim(s, "triage:work", slot - timedelta(seconds=30), "a", now)
    [catch_up] = await scheduler.take_over()
    await asyncio.sleep(0.1)
    assert runs == 1
    job = scheduler.scheduler.get_job("triage:work")
    await job.func()  # APScheduler fires the next slot while the catch-up still runs
    assert runs == 1
    release.set()
    await catch_up
