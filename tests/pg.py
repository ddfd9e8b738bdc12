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

or build your own fixture on `temporary_database()`, or call `require_pg_url()` first thing
in a test that needs the server some other way.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

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
