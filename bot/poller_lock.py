"""One poller per bot token: a second `fleet run` on the same database refuses to poll.

Two processes polling one token make Telegram answer 409 Conflict to both, forever. SQLite
deployments hold an exclusive file lock beside the database; PostgreSQL deployments hold a
session advisory lock on a connection kept open for the life of the process (a pooled
connection would be returned and the lock with it).
"""

from __future__ import annotations

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

    async def acquire(self) -> None:
        conn = await self.db.engine.connect()
        await conn.execute(
            text("SELECT set_config('application_name', :name, false)"),
            {"name": f"fleet run ({describe_self()})"[:63]},
        )
        won = (
            await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
        ).scalar_one()
        await conn.commit()
        if won:
            self._conn = conn
            return
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
        await conn.close()
        who = f"{holder[0]} from {holder[1] or 'local socket'}" if holder else "another process"
        raise LockHeld(
            f"another fleet run is already polling this bot ({who}; PostgreSQL advisory lock "
            f"{self.key}). Stop it first: two pollers on one token make Telegram refuse both."
        )

    async def release(self) -> None:
        if self._conn is not None:
            await self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            await self._conn.close()
            self._conn = None


def poller_lock(
    db: Database, token: str, sqlite_file: Path | None, config_path: Path
) -> PollerLock:
    if not db.is_sqlite:
        return AdvisoryLock(db, token)
    beside = sqlite_file if sqlite_file is not None else config_path
    return FileLock(beside.with_name(beside.name + ".lock"))
