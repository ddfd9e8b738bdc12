"""One poller per bot token.

Two processes polling one token make Telegram answer 409 Conflict to both, forever. SQLite
deployments hold an exclusive file lock beside the database, and a second `fleet run` refuses
to start. PostgreSQL deployments hold a session advisory lock on a connection kept open for the
life of the process (a pooled connection would be returned and the lock with it); there a
second `fleet run` starts as a standby (see bot.leader) and `try_acquire`s the lock until the
leader is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database

# Seconds to wait for a dead lock connection to close before leaving it behind.
ALIVE_CLOSE_TIMEOUT = 2.0


class LockHeld(Exception):
    """Another process polls this bot token; the message says which."""


class PollerLock(Protocol):
    async def acquire(self) -> None: ...
    async def release(self) -> None: ...


def describe_self() -> str:
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}"


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    async def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "an unknown process"
            file.close()
            raise LockHeld(
                f"another fleet run is already polling this bot ({holder}; lock {self.path}). "
                "Stop it first: two pollers on one token make Telegram refuse both."
            ) from None
        file.seek(0)
        file.truncate()
        file.write(describe_self() + "\n")
        file.flush()
        self._file = file

    async def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class AdvisoryLock:
    def __init__(self, db: Database, token: str) -> None:
        self.db = db
        bot_id = token.split(":", 1)[0]
        digest = hashlib.sha256(f"fleetbridge-poller:{bot_id}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self._conn: AsyncConnection | None = None
        # One statement at a time on the lock connection: the check before each getUpdates
        # and the periodic check may come together.
        self._using = asyncio.Lock()

    async def acquire(self) -> None:
        if await self.try_acquire():
            return
        raise LockHeld(
            f"another fleet run is already polling this bot ({await self.holder()}; PostgreSQL "
            f"advisory lock {self.key}). Stop it first: two pollers on one token make Telegram "
            "refuse both."
        )

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; False when another process holds it."""
        if self._conn is not None:
            return True
        conn = await self.db.engine.connect()
        try:
            await conn.execute(
                text("SELECT set_config('application_name', :name, false)"),
                {"name": f"fleet run ({describe_self()})"[:63]},
            )
            won = (
                await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
            ).scalar_one()
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if won:
            self._conn = conn
            return True
        await conn.close()
        return False

    async def holder(self) -> str:
        """Who holds the lock, as pg_stat_activity names it (its application_name)."""
        async with self.db.engine.connect() as conn:
            holder = (
                await conn.execute(
                    text(
                        "SELECT a.application_name, a.client_addr FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                        "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
                    ),
                    {"hi": (self.key >> 32) & 0xFFFFFFFF, "lo": self.key & 0xFFFFFFFF},
                )
            ).first()
        return f"{holder[0]} from {holder[1] or 'local socket'}" if holder else "another process"

    async def alive(self, within: float) -> bool:
        """Whether the lock's connection answers within `within` seconds (so the lock is
        still ours: PostgreSQL drops it only with the session)."""
        if self._conn is None:
            return False
        try:
            async with asyncio.timeout(within), self._using:
                await self._conn.execute(text("SELECT 1"))
                await self._conn.commit()
        except Exception:  # noqa: BLE001 - any failure means the lock may be gone
            return False
        return True

    async def abandon(self) -> None:
        """Drop the lock connection without waiting on it (after `alive` failed): a session
        that still lives on the server lets the lock go when the connection closes."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ALIVE_CLOSE_TIMEOUT):
                await conn.invalidate()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ALIVE_CLOSE_TIMEOUT):
                await conn.close()

    async def release(self) -> None:
        if self._conn is None:
            return
        try:
            await self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            await self._conn.close()
            self._conn = None
        except Exception:  # noqa: BLE001 - the connection died: the lock went with it
            await self.abandon()


def poller_lock(
    db: Database, token: str, sqlite_file: Path | None, config_path: Path
) -> PollerLock:
    if not db.is_sqlite:
        return AdvisoryLock(db, token)
    beside = sqlite_file if sqlite_file is not None else config_path
    return FileLock(beside.with_name(beside.name + ".lock"))
