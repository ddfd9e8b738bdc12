"""The async engine, sessions and the transaction modes that make claims safe on both backends,
and the wakes after a commit (`touch` / `on_commit`), carried to the other nodes by PostgreSQL's
LISTEN/NOTIFY (`relay_wakes`)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

# The NOTIFY channel of the wakes; a payload is "<topic> <instance>".
WAKE_CHANNEL = "fleet_wake"
# How often the listening connection is checked, and how long it may take to answer.
LISTEN_CHECK_EVERY = 10.0
LISTEN_CHECK_TIMEOUT = 5.0

# A write transaction that claims work on SQLite must take the write lock when it begins:
# with a plain (deferred) BEGIN two claimers both read, then one fails to upgrade its lock
# with SQLITE_BUSY at once, whatever the busy timeout.
_IMMEDIATE = "fleet_immediate"
_TOUCHED = "fleet_touched"


def touch(session: AsyncSession, topic: str) -> None:
    """Mark that this transaction changed `topic` (see `Database.on_commit`)."""
    session.info.setdefault(_TOUCHED, set()).add(topic)


class Database:
    """Owns the engine.

    `claim()` is for every transaction that reads and then writes: on SQLite it takes the write
    lock at BEGIN (IMMEDIATE), because a deferred transaction whose snapshot went stale fails
    at its first write with "database is locked", whatever the busy timeout. Pair row claims
    with `with_for_update(skip_locked=True)` so PostgreSQL claimers skip each other's rows.
    `session()` is for reads and for transactions whose first statement writes. Keep write
    transactions short: no network calls inside them."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            # One writer at a time anyway; a small fixed pool avoids a thread per burst.
            kwargs["connect_args"] = {"timeout": 30}
            kwargs["pool_size"] = 5
            kwargs["max_overflow"] = 0
            # Sessions always end their transaction; the extra ROLLBACK on every return to the
            # pool is a wasted round trip to the driver's thread.
            kwargs["pool_reset_on_return"] = None
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        # Names this process in the NOTIFY payloads, so it skips the wakes it sent itself.
        self.instance = uuid.uuid4().hex[:12]

    def redact_with(self, redact: Callable[[str], str]) -> None:
        """Pass every text parameter of every statement through `redact` (bot.redact): no
        secret reaches a table, whichever code wrote the text (an alert, an incident title
        quoting a command's output, a model error kept as a run's outcome). Comparisons stay
        consistent, since a value is redacted the same way when written and when looked up."""

        def before_execute(
            conn: Connection,
            cursor: Any,
            statement: str,
            parameters: Any,
            context: Any,
            executemany: bool,
        ) -> tuple[str, Any]:
            return statement, _redact_parameters(parameters, redact)

        event.listen(self.engine.sync_engine, "before_cursor_execute", before_execute, retval=True)

    def on_commit(self, topic: str, listener: Callable[[], None]) -> None:
        """Call `listener` after any transaction that `touch`ed `topic` commits: the sender
        when outbox rows were queued, the run worker when an agent was woken. On PostgreSQL
        the commit also wakes the listeners of the other nodes (see `relay_wakes`)."""
        self._listeners.setdefault(topic, []).append(listener)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits when the block ends without an exception."""
        async with self.sessions() as session:
            async with session.begin():
                yield session
                await self._notify_nodes(session)
            self._notify(session)

    @asynccontextmanager
    async def claim(self) -> AsyncIterator[AsyncSession]:
        """A write transaction that holds the write lock from its first statement."""
        async with self.sessions() as session:
            async with session.begin():
                await session.connection(execution_options={_IMMEDIATE: True})
                yield session
                await self._notify_nodes(session)
            self._notify(session)

    async def _notify_nodes(self, session: AsyncSession) -> None:
        """NOTIFY each touched topic inside the transaction: PostgreSQL delivers it to the
        listening nodes when, and only if, the transaction commits."""
        if self.is_sqlite:
            return
        for topic in session.info.get(_TOUCHED, ()):
            await session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": WAKE_CHANNEL, "payload": f"{topic} {self.instance}"},
            )

    def _notify(self, session: AsyncSession) -> None:
        for topic in session.info.pop(_TOUCHED, ()):
            self._wake(topic)

    def _wake(self, topic: str) -> None:
        for listener in self._listeners.get(topic, ()):
            listener()

    async def relay_wakes(self, stop: asyncio.Event) -> None:
        """Until `stop` (PostgreSQL only): LISTEN on a connection of its own and wake this
        process's listeners when another node's commit touched their topic. Each worker still
        polls on its own, so a wake lost while reconnecting costs only the polling delay; every
        topic is woken once after each (re)connect for the same reason."""
        if self.is_sqlite:
            return
        warned = False
        while not stop.is_set():
            try:
                await self._listen(stop)
                warned = False
            except Exception as err:  # noqa: BLE001 - the database is away: listen again later
                if not warned:
                    log.warning(
                        "wakes from other nodes paused (%s: %s); polling meanwhile, listening "
                        "again in a few seconds",
                        type(err).__name__,
                        err,
                    )
                    warned = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LISTEN_CHECK_TIMEOUT)

    async def _listen(self, stop: asyncio.Event) -> None:
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection  # asyncpg's connection: it delivers notifications
            assert driver is not None

            def received(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                topic, _, sender = payload.partition(" ")
                if sender != self.instance:
                    self._wake(topic)

            await driver.add_listener(WAKE_CHANNEL, received)
            try:
                for topic in list(self._listeners):
                    self._wake(topic)
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=LISTEN_CHECK_EVERY)
                    async with asyncio.timeout(LISTEN_CHECK_TIMEOUT):
                        await driver.execute("SELECT 1")
                async with asyncio.timeout(LISTEN_CHECK_TIMEOUT):
                    await driver.remove_listener(WAKE_CHANNEL, received)
            except BaseException:
                await conn.invalidate()  # not back to the pool with a listener on it
                raise

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration (a quick check when it is there).

        Processes that start together (`fleet run` and a few `fleet send` on a new database)
        must not all create the schema: the upgrade runs under a lock (a file lock beside the
        SQLite file, a PostgreSQL advisory lock), and whoever gets it second finds it done."""
        head = head_revision()
        async with self.engine.connect() as conn:
            current = await _current_revision(conn)
        if current == head:
            return
        if self.is_sqlite:
            path = self.sqlite_file()
            lock = await _lock_file(path.with_name(path.name + ".migrate.lock")) if path else None
            try:
                await self._upgrade_unless(head)
            finally:
                if lock is not None:
                    lock.close()  # closing the file releases the lock
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATE_KEY})
            await conn.commit()
            try:
                await self._upgrade_unless(head)
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATE_KEY})
                await conn.commit()

    async def _upgrade_unless(self, head: str) -> None:
        async with self.engine.connect() as conn:
            if await _current_revision(conn) == head:
                return  # another process upgraded it while we waited for the lock
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    def sqlite_file(self) -> Path | None:
        """The SQLite database file, or None (PostgreSQL, or an in-memory database)."""
        if not self.is_sqlite:
            return None
        database = make_url(self.url).database
        if not database or database.startswith(":memory:") or database.startswith("file:"):
            return None
        return Path(database)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _redact_parameters(parameters: Any, redact: Callable[[str], str]) -> Any:
    """`parameters` as the driver gets them (a tuple or dict, or a list of them for
    executemany) with each string redacted."""
    if isinstance(parameters, str):
        return redact(parameters)
    if isinstance(parameters, dict):
        return {k: redact(v) if isinstance(v, str) else v for k, v in parameters.items()}
    if isinstance(parameters, tuple):
        return tuple(_redact_parameters(v, redact) for v in parameters)
    if isinstance(parameters, list):
        return [_redact_parameters(v, redact) for v in parameters]
    return parameters


# pg_advisory_lock key of the schema upgrade (any constant other code does not use).
_MIGRATE_KEY = int.from_bytes(
    hashlib.sha256(b"fleetbridge-migrate").digest()[:8], "big", signed=True
)


async def _lock_file(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on `path` (created if needed), waiting for it in a thread; close
    the returned file to release it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file = path.open("ab")
    try:
        await asyncio.to_thread(fcntl.flock, file.fileno(), fcntl.LOCK_EX)
    except BaseException:
        file.close()
        raise
    return file


_REVISION = re.compile(r'^revision(?:: str)? = ["\']([^"\']+)["\']', re.MULTILINE)
_DOWN = re.compile(r'^down_revision(?:: [^=]+)? = ["\']([^"\']+)["\']', re.MULTILINE)


def head_revision() -> str:
    """The newest migration, read from the migration files without importing Alembic (which
    would stay in memory for the life of the process)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        if found := _REVISION.search(source):
            revisions.add(found.group(1))
        parents.update(_DOWN.findall(source))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"expected one head migration, found {sorted(heads)}")
    return heads.pop()


async def _current_revision(conn: AsyncConnection) -> str | None:
    try:
        result = await conn.execute(text("SELECT version_num FROM alembic_version"))
    except DBAPIError:  # no alembic_version table: a new database
        return None
    return result.scalar_one_or_none()


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
