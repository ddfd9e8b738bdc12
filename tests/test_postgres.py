"""The storage layer on a real PostgreSQL server (asyncpg), and claims on both backends.

Needs FLEET_TEST_PG_URL (see tests/pg.py and .ci/postgres.sh); without it the PostgreSQL
tests skip, or fail under CI. The SQLite half of the claim tests always runs.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from bot.poller_lock import AdvisoryLock, LockHeld
from bot.redact import Redactor
from storage import jobs, outbox, usage
from storage.db import Database, _alembic_config
from storage.models import Base, Incident, JobBeat, Outbox, Silence, Usage, UTCDateTime, utcnow
from storage.statuses import OutboxStatus
from tests import pg

TOKEN = "123456789:AAH-not-a-real-token"

# The module's own database, created by tests/pg.py (skips, or fails under CI, without a server).
pg_database = pg.pg_database


# --- fixtures -------------------------------------------------------------------------------


pg_migrated = pg.pg_migrated
pg_db = pg.pg_db
backend_url = pg.backend_url
any_db = pg.any_db


# --- migrations -----------------------------------------------------------------------------

DDL = re.compile(r"^\s*(CREATE|ALTER|DROP|INSERT|UPDATE|DELETE|TRUNCATE)\b", re.IGNORECASE)


async def test_migrate_creates_every_table_and_a_second_migrate_is_a_no_op() -> None:
    async with pg.temporary_database("migrate") as url:
        db = Database(url)
        try:
            await db.migrate()

            async with db.engine.connect() as conn:
                tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
                version = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one()
                drift = await conn.run_sync(_schema_drift)
            assert tables == set(Base.metadata.tables) | {"alembic_version"}
            assert version == ScriptDirectory.from_config(_alembic_config()).get_current_head()
            assert drift == [], f"the migrations and the models disagree on PostgreSQL: {drift}"

            statements: list[str] = []

            def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
                statements.append(statement)

            event.listen(db.engine.sync_engine, "before_cursor_execute", record)
            await db.migrate()
            event.remove(db.engine.sync_engine, "before_cursor_execute", record)
            assert statements, "the second migrate did not even look at the database"
            assert [s for s in statements if DDL.match(s)] == []

            async with db.engine.connect() as conn:
                again = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
                rows = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).one()
            assert again == tables
            assert rows == (1,)
        finally:
            await db.dispose()


def _schema_drift(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_datetime_columns_are_timestamptz(pg_db: Database) -> None:
    expected = {
        (table.name, column.name)
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, UTCDateTime)
    }
    async with pg_db.session() as s:
        rows = await s.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            )
        )
        types = {(t, c): d for t, c, d in rows}
    assert expected
    assert {key: types[key] for key in expected} == dict.fromkeys(
        expected, "timestamp with time zone"
    )


# --- outbox ---------------------------------------------------------------------------------

TO = outbox.Destination(chat_id=-100123, topic=7, feed="ops")


async def _outbox_rows(db: Database, dedup_key: str) -> list[Outbox]:
    async with db.session() as s:
        stmt = select(Outbox).where(Outbox.dedup_key == dedup_key)
        return list((await s.execute(stmt)).scalars())


async def test_outbox_enqueue_dedups_on_postgres(pg_db: Database) -> None:
    buttons = [[{"text": "Approve", "callback_data": "ap:1"}]]
    async with pg_db.session() as s:
        first = await outbox.enqueue(s, TO, "hello", buttons=buttons, dedup_key="k1")
        again_same_tx = await outbox.enqueue(s, TO, "hello again", dedup_key="k1")
    async with pg_db.session() as s:
        again_later = await outbox.enqueue(s, TO, "hello later", dedup_key="k1")
    assert isinstance(first, int)
    assert again_same_tx is None
    assert again_later is None
    [row] = await _outbox_rows(pg_db, "k1")
    assert (row.id, row.text, row.buttons, row.status) == (first, "hello", buttons, "pending")
    assert (row.chat_id, row.topic, row.feed) == (TO.chat_id, TO.topic, TO.feed)

    # Without a dedup key every call is its own message.
    async with pg_db.session() as s:
        a = await outbox.enqueue(s, TO, "x")
        b = await outbox.enqueue(s, TO, "x")
    assert a is not None and b is not None and a != b


async def test_outbox_enqueue_dedups_across_concurrent_transactions(pg_db: Database) -> None:
    """A second enqueue of a key another transaction has inserted but not yet committed
    waits for it, then inserts nothing, or inserts after all if the first rolls back."""

    async def enqueue_alone(key: str) -> int | None:
        async with pg_db.session() as s:
            return await outbox.enqueue(s, TO, "second", dedup_key=key)

    async with pg_db.session() as s:
        first = await outbox.enqueue(s, TO, "first", dedup_key="race")
        second = asyncio.create_task(enqueue_alone("race"))
        await asyncio.sleep(0.3)
        assert not second.done(), "the second insert did not wait for the first transaction"
    assert first is not None
    assert await asyncio.wait_for(second, 10) is None
    assert [r.text for r in await _outbox_rows(pg_db, "race")] == ["first"]

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with pg_db.session() as s:
            assert await outbox.enqueue(s, TO, "rolled back", dedup_key="undo") is not None
            second = asyncio.create_task(enqueue_alone("undo"))
            await asyncio.sleep(0.3)
            assert not second.done()
            raise Abort
    assert await asyncio.wait_for(second, 10) is not None
    assert [r.text for r in await _outbox_rows(pg_db, "undo")] == ["second"]


# --- job beats ------------------------------------------------------------------------------


async def _beat(db: Database, job_id: str) -> JobBeat:
    async with db.session() as s:
        return (await s.execute(select(JobBeat).where(JobBeat.job_id == job_id))).scalar_one()


async def test_job_beats_upsert_on_postgres(pg_db: Database) -> None:
    t0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    async with pg_db.session() as s:
        await jobs.started(s, "outbox", t0, 60)
    beat = await _beat(pg_db, "outbox")
    assert (beat.runs, beat.failures, beat.interval_s, beat.last_start) == (1, 0, 60, t0)
    assert beat.last_finish is None and beat.last_success is None

    async with pg_db.session() as s:
        await jobs.finished(s, "outbox", t0 + timedelta(seconds=1), None)
        await jobs.started(s, "outbox", t0 + timedelta(minutes=1), 120)
    beat = await _beat(pg_db, "outbox")
    assert (beat.runs, beat.interval_s) == (2, 120)
    assert beat.last_start == t0 + timedelta(minutes=1)
    assert beat.last_finish == beat.last_success == t0 + timedelta(seconds=1)

    async with pg_db.session() as s:
        await jobs.finished(s, "outbox", t0 + timedelta(minutes=2), "boom " * 1000)
    beat = await _beat(pg_db, "outbox")
    assert beat.failures == 1
    assert beat.last_error is not None and len(beat.last_error) == 2000
    assert beat.last_finish == beat.last_error_at == t0 + timedelta(minutes=2)
    assert beat.last_success == t0 + timedelta(seconds=1)

    async with pg_db.session() as s:
        assert [b.job_id for b in await jobs.all_beats(s)] == ["outbox"]


async def test_job_started_upserts_concurrently(pg_db: Database) -> None:
    """Concurrent first starts of one job all count: the losers of the insert update."""
    at = datetime(2030, 5, 1, tzinfo=UTC)

    async def start() -> None:
        async with pg_db.session() as s:
            await jobs.started(s, "racy", at, 30)

    await asyncio.gather(*(start() for _ in range(6)))
    assert (await _beat(pg_db, "racy")).runs == 6


# --- incidents ------------------------------------------------------------------------------


def _incident(fingerprint: str, status: str = "open") -> Incident:
    return Incident(
        fingerprint=fingerprint, status=status, severity="P2", title="disk", source="check:disk"
    )


async def test_one_open_incident_per_fingerprint_on_postgres(pg_db: Database) -> None:
    async with pg_db.session() as s:
        s.add(_incident("disk:web1"))
    for status in ("open", "acknowledged", "silenced"):
        with pytest.raises(IntegrityError, match="uq_incidents_open_fingerprint"):
            async with pg_db.session() as s:
                s.add(_incident("disk:web1", status))

    # Closed incidents do not count: any number of them beside one open one.
    async with pg_db.session() as s:
        s.add_all([_incident("disk:web2", "resolved"), _incident("disk:web2", "resolved")])
    async with pg_db.session() as s:
        s.add(_incident("disk:web2"))
    async with pg_db.session() as s:
        s.add(_incident("disk:web1", "resolved"))

    async with pg_db.session() as s:
        rows = await s.execute(
            select(Incident.fingerprint, Incident.status, func.count())
            .group_by(Incident.fingerprint, Incident.status)
            .order_by(Incident.fingerprint, Incident.status)
        )
        assert [tuple(r) for r in rows] == [
            ("disk:web1", "open", 1),
            ("disk:web1", "resolved", 1),
            ("disk:web2", "open", 1),
            ("disk:web2", "resolved", 2),
        ]
        indexdef = (
            await s.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                {"n": "uq_incidents_open_fingerprint"},
            )
        ).scalar_one()
    assert "UNIQUE" in indexdef and "WHERE" in indexdef


# --- UTCDateTime ----------------------------------------------------------------------------


async def test_utc_datetime_round_trips_on_postgres(pg_db: Database) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    given = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=ist)
    utc = datetime(2030, 1, 1, 21, 34, 5, 678901, tzinfo=UTC)
    async with pg_db.session() as s:
        s.add(Silence(matcher="disk", until=given, created_by="test"))
        s.add(Silence(matcher="utc", until=utc, created_by="test"))

    async with pg_db.session() as s:
        # The session's time zone must not leak into what the application reads.
        await s.execute(text("SET LOCAL TIME ZONE 'America/New_York'"))
        values = list((await s.execute(select(Silence.until).order_by(Silence.id))).scalars())
        stored = (
            await s.execute(text("SELECT until AT TIME ZONE 'UTC' FROM silences ORDER BY id"))
        ).scalars()
        assert list(stored) == [utc.replace(tzinfo=None)] * 2
    assert values == [utc, utc]
    assert all(v.tzinfo is UTC for v in values)

    with pytest.raises(StatementError, match="naive datetime"):
        async with pg_db.session() as s:
            s.add(Silence(matcher="naive", until=datetime(2030, 1, 1), created_by="test"))


# --- claims on both backends ----------------------------------------------------------------

CHAT = 4242


async def _queue(db: Database, n: int) -> list[int]:
    async with db.session() as s:
        ids = [await outbox.enqueue(s, outbox.Destination(CHAT), f"m{i}") for i in range(n)]
    assert None not in ids
    return [i for i in ids if i is not None]


async def _claim(
    db: Database, limit: int, *, holding: Callable[[list[int]], Awaitable[None]] | None = None
) -> list[int]:
    """Take up to `limit` pending rows in one claim transaction and mark them sent; every
    mark must win, or another claimer had the row too. `holding` runs between the select and
    the marks, while the rows are held."""
    async with db.claim() as s:
        stmt = (
            select(Outbox.id)
            .where(Outbox.status == OutboxStatus.PENDING, Outbox.chat_id == CHAT)
            .order_by(Outbox.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list((await s.execute(stmt)).scalars())
        if holding is not None:
            await holding(ids)
        for row_id in ids:
            assert await outbox.mark_sent(s, row_id), f"row {row_id} was claimed twice"
    return ids


async def _statuses(db: Database) -> dict[str, int]:
    async with db.session() as s:
        rows = await s.execute(select(Outbox.status, func.count()).group_by(Outbox.status))
        return {status: n for status, n in rows}


async def test_two_concurrent_claims_take_disjoint_rows(any_db: Database) -> None:
    """PostgreSQL: the second claimer skips the first's locked rows without waiting.
    SQLite: the second claimer's BEGIN IMMEDIATE waits for the first to commit, then sees
    its rows as taken. Either way no row is claimed twice."""
    queued = await _queue(any_db, 8)
    log: list[str] = []
    a_selected, b_selected = asyncio.Event(), asyncio.Event()

    async def a_holds(ids: list[int]) -> None:
        log.append("a selected")
        a_selected.set()
        # PostgreSQL: B selects meanwhile. SQLite: B cannot begin, so this times out.
        with suppress(TimeoutError):
            await asyncio.wait_for(b_selected.wait(), 1.0)
        log.append("a commits")

    async def b_holds(ids: list[int]) -> None:
        log.append("b selected")
        b_selected.set()

    async def b() -> list[int]:
        await a_selected.wait()
        return await _claim(any_db, 5, holding=b_holds)

    a_ids, b_ids = await asyncio.wait_for(
        asyncio.gather(_claim(any_db, 5, holding=a_holds), b()), 30
    )
    assert a_ids == queued[:5]
    assert b_ids == queued[5:]
    if any_db.is_sqlite:
        assert log == ["a selected", "a commits", "b selected"]
    else:
        assert log == ["a selected", "b selected", "a commits"]
    assert await _statuses(any_db) == {"sent": 8}


async def test_many_claimers_drain_the_queue_each_row_once(any_db: Database) -> None:
    queued = await _queue(any_db, 40)
    claimed: list[int] = []

    async def hold(_ids: list[int]) -> None:
        await asyncio.sleep(0.01)  # keep the rows held while others try

    async def worker() -> None:
        while ids := await _claim(any_db, 3, holding=hold):
            claimed.extend(ids)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(6))), 60)
    assert sorted(claimed) == queued
    assert await _statuses(any_db) == {"sent": 40}


# --- the poller's advisory lock -------------------------------------------------------------


@pytest_asyncio.fixture
async def two_dbs(pg_database: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two Database objects on one server, as two `fleet run` processes would have."""
    first, second = Database(pg_database), Database(pg_database)
    yield first, second
    await first.dispose()
    await second.dispose()


async def _churn(db: Database) -> None:
    """Check out, use and return several pooled connections at once, then again."""

    async def query() -> None:
        async with db.session() as s:
            await s.execute(text("SELECT pg_sleep(0.02)"))
            await s.execute(text("SELECT pg_advisory_unlock_all()"))

    for _ in range(2):
        await asyncio.gather(*(query() for _ in range(8)))


async def test_advisory_lock_allows_one_poller_per_token(
    two_dbs: tuple[Database, Database],
) -> None:
    db1, db2 = two_dbs
    first, second = AdvisoryLock(db1, TOKEN), AdvisoryLock(db2, TOKEN)
    assert first.key == second.key
    await first.acquire()
    try:
        with pytest.raises(LockHeld, match=rf"fleet run \(pid {os.getpid()} on ") as held:
            await second.acquire()
        assert str(first.key) in str(held.value)

        # The lock lives on its own connection: pool traffic on the holder's engine, even
        # `pg_advisory_unlock_all()` on pooled connections, must not drop it.
        await _churn(db1)
        with pytest.raises(LockHeld, match=r"fleet run \(pid "):
            await second.acquire()
        async with db1.session() as s:
            holders = (
                await s.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND pid <> pg_backend_pid() AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    )
                )
            ).scalar_one()
        assert holders == 1
    finally:
        await first.release()

    await second.acquire()
    try:
        with pytest.raises(LockHeld, match=r"fleet run \(pid "):
            await first.acquire()
    finally:
        await second.release()
    await first.acquire()  # free again after the second releases
    await first.release()


async def test_advisory_lock_is_per_bot(two_dbs: tuple[Database, Database]) -> None:
    db1, db2 = two_dbs
    one = AdvisoryLock(db1, "111:secret-a")
    other = AdvisoryLock(db2, "222:secret-b")
    same_bot_new_secret = AdvisoryLock(db2, "111:rotated-secret")
    await one.acquire()
    try:
        await other.acquire()  # a different bot polls freely
        await other.release()
        with pytest.raises(LockHeld):  # the bot id, not the secret, names the poller
            await same_bot_new_secret.acquire()
    finally:
        await one.release()


async def test_no_secret_reaches_a_table_on_either_backend(any_db: Database) -> None:
    # Issue 18.9/18.19: every text written passes the one redactor, whatever wrote it (an
    # alert quoting a command's output, usage rows written many at once).
    secret = "tok-5e6f7a8b9c0d"
    any_db.redact_with(Redactor([secret]))
    feed = outbox.Destination(-100, 3, "alerts")
    async with any_db.session() as s:
        await outbox.enqueue(s, feed, f"probe token={secret}", dedup_key=f"k:{secret}")
        await usage.record(
            s,
            [
                {
                    "agent_id": "coder",
                    "run_id": None,
                    "purpose": "turn",
                    "model": "m",
                    "profile": "primary",
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_write_tokens": 0,
                    "cache_write_1h_tokens": 0,
                    "cache_read_tokens": 0,
                    "cost_usd": Decimal(0),
                    "price_known": True,
                    "latency_ms": 1,
                    "fallback_used": False,
                    "status": "error",
                    "error": f"APIStatusError: bad key {secret} ({n})",
                    "created_at": utcnow(),
                }
                for n in range(3)
            ],
        )
    async with any_db.session() as s:
        row = await outbox.latest(s, "k:")
        errors = (await s.execute(select(Usage.error))).scalars().all()
        # Looked up by the secret, a row is found the way it was written.
        assert await outbox.enqueue(s, feed, "again", dedup_key=f"k:{secret}") is None
    assert row is not None and row.text == "probe token=***" and row.dedup_key == "k:***"
    assert errors and all(e is not None and "bad key ***" in e for e in errors)
