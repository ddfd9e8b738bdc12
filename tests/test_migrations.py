"""Upgrading a deployed database: every migration applies on top of real rows."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine

from storage.db import MIGRATIONS, Database, head_revision


def upgrade_sync(url: str, revision: str) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


async def test_a_database_from_the_first_release_upgrades_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.db"
    upgrade_sync(f"sqlite:///{path}", "0001")
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "INSERT INTO outbox (chat_id, text, dedup_key, status, attempts, next_attempt_at,"
            " parts_sent, sent_message_ids, created_at)"
            " VALUES (-1, 'queued before the upgrade', 'old:1', 'pending', 0,"
            " '2026-11-25 10:00:00', 0, '[]', '2026-11-25 10:00:00')"
        )
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    await db.dispose()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)
        ]
        assert conn.execute("SELECT text, status, edit_of FROM outbox").fetchall() == [
            ("queued before the upgrade", "pending", None)
        ]
