"""Upgrading a deployed database: every migration applies on top of real rows."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine

from storage.db import MIGRATIONS, Database, head_revision


def upgrade_sync(url: str, revision: str, *, down: bool = False) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
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


async def test_incident_confirmations_move_from_a_json_list_to_rows_and_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.db"
    url = f"sqlite:///{path}"
    upgrade_sync(url, "0016_pipelines")
    entries = (
        '[{"requested": "P0", "by": "agent:ops", "at": "2026-11-25T10:01:00+00:00"},'
        ' {"by": "agent:hub", "severity": "P0", "at": "2026-11-25T10:02:00+00:00",'
        ' "approval": 3},'
        ' {"note": "on it", "by": "person:1001", "at": "2026-11-25T10:03:00+00:00"}]'
    )
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "INSERT INTO incidents (fingerprint, severity, requested_severity, status, title,"
            " details, source, confirmations, opened_at)"
            " VALUES ('db', 'P2', 'P0', 'open', 'Database down', '', 'agent:ops', ?,"
            " '2026-11-25 10:00:00')",
            (entries,),
        )
    upgrade_sync(url, "0022_approvals")
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT incident_id, actor, once_key, json_extract(entry, '$.at')"
            " FROM incident_confirmations ORDER BY id"
        ).fetchall()
        columns = [c[1] for c in conn.execute("PRAGMA table_info(incidents)")]
        # The partial unique index on open fingerprints survives the dropped column.
        index = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'uq_incidents_open_fingerprint'"
        ).fetchone()
    assert rows == [
        (1, "agent:ops", None, "2026-11-25T10:01:00+00:00"),
        (1, "agent:hub", "P0", "2026-11-25T10:02:00+00:00"),
        (1, "person:1001", None, "2026-11-25T10:03:00+00:00"),
    ]
    assert "confirmations" not in columns
    assert index is not None and "WHERE" in index[0]
    upgrade_sync(url, "0016_pipelines", down=True)
    with closing(sqlite3.connect(path)) as conn:
        [(restored,)] = conn.execute("SELECT confirmations FROM incidents").fetchall()
    assert [e.get("by") for e in json.loads(restored)] == ["agent:ops", "agent:hub", "person:1001"]
