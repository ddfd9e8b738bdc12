"""PostgreSQL for the tests: where the server is, and a fresh database per test module.

The server comes from `.ci/postgres.sh`, which exports FLEET_TEST_PG_URL
(``postgresql+asyncpg://postgres@127.0.0.1:PORT/fleet_test``); that database is only used as
the admin database from which each module creates, and later drops, its own.

Without FLEET_TEST_PG_URL the PostgreSQL tests skip, except under CI (the CI environment
variable set), where they fail: CI must not go green by skipping PostgreSQL silently.

Use it from a test module (an assignment rather than an import, which ruff would call
unused)::

    from tests import pg

    pg_database = pg.pg_database  # module-scoped fixture; yields the new database's URL

and, for tests of storage on both backends, `pg_migrated` (the module's database migrated
once), `pg_db` (a Database on it, emptied for the test) and `any_db` (a migrated, empty
Database on SQLite and on PostgreSQL in turn; assign `backend_url` too, which it uses).

or build your own fixture on `temporary_database()`, or call `require_pg_url()` first thing
in a test that needs the server some other way.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url

from storage.db import Database
from storage.models import Base

ENV = "FLEET_TEST_PG_URL"
HOW = 'start one with: eval "$(bash .ci/postgres.sh)"'


def pg_url() -> str | None:
    """The admin URL of the test server (SQLAlchemy form), or None when there is none."""
    return os.environ.get(ENV) or None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_pg_url() -> str:
    """The admin URL; otherwise skip the test, or fail it under CI."""
    url = pg_url()
    if url is not None:
        return url
    if in_ci():
        pytest.fail(f"{ENV} is not set but CI is: PostgreSQL tests must run in CI ({HOW})")
    pytest.skip(f"PostgreSQL tests need {ENV} ({HOW})")


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (postgresql+asyncpg://...) as a DSN asyncpg.connect accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_url(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@asynccontextmanager
async def temporary_database(label: str = "t", admin_url: str | None = None) -> AsyncIterator[str]:
    """Create a uniquely named empty database, yield its SQLAlchemy URL, drop it afterwards
    (WITH (FORCE), so a connection a test leaked cannot keep it alive)."""
    import asyncpg  # the PostgreSQL extra; imported here so SQLite-only runs need not have it

    admin = admin_url or require_pg_url()
    slug = re.sub(r"[^a-z0-9_]", "_", label.lower())[:30]
    name = f"fleet_{slug}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(asyncpg_dsn(admin))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield database_url(admin, name)
    finally:
        conn = await asyncpg.connect(asyncpg_dsn(admin))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pg_database(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh, empty database for the requesting test module; yields its SQLAlchemy URL.
    Skips (or fails under CI) when no server is configured."""
    async with temporary_database(request.module.__name__.rsplit(".", 1)[-1]) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pg_migrated(pg_database: str) -> AsyncIterator[str]:
    """The module's database, migrated once; yields its URL."""
    db = Database(pg_database)
    try:
        await db.migrate()
    finally:
        await db.dispose()
    yield pg_database


async def truncate_all(db: Database) -> None:
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with db.session() as session:
        await session.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))


@pytest_asyncio.fixture
async def pg_db(pg_migrated: str) -> AsyncIterator[Database]:
    """A Database on the migrated PostgreSQL database, emptied for this test."""
    db = Database(pg_migrated)
    await truncate_all(db)
    yield db
    await db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # Synchronous on purpose: it pulls the module-loop PostgreSQL fixture in lazily (so the
    # SQLite case never needs a server), which cannot be done from inside a running loop.
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    url: str = request.getfixturevalue("pg_migrated")
    return url


@pytest_asyncio.fixture
async def any_db(backend_url: str) -> AsyncIterator[Database]:
    """A migrated, empty Database on each backend in turn (SQLite: a temporary file)."""
    db = Database(backend_url)
    if db.is_sqlite:
        await db.migrate()
    else:
        await truncate_all(db)
    yield db
    await db.dispose()
