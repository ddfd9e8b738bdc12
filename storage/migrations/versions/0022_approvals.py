"""incident_confirmations: an incident's escalation record as rows, not a JSON list

Revision ID: 0022_approvals
Revises: 0020_nodes
Create Date: 2026-12-04 23:05:00

Each entry of `incidents.confirmations` becomes a row (in list order, so ids keep it), and the
column goes: adding an entry is an INSERT in the transaction of its change, never a
read-modify-write of the list. An incident's P0 confirmation (the first entry with
"severity": "P0") gets `once_key` "P0", unique per incident.
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0022_approvals"
down_revision: str | None = "0020_nodes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = sa.table(
    "incident_confirmations",
    sa.column("incident_id", sa.Integer()),
    sa.column("actor", sa.String()),
    sa.column("once_key", sa.String()),
    sa.column("entry", sa.JSON()),
    sa.column("created_at", storage.models.UTCDateTime(timezone=True)),
)


def _entries(raw: Any) -> list[dict[str, Any]]:
    value = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return [e for e in value or [] if isinstance(e, dict)]


def _at(entry: dict[str, Any], fallback: datetime) -> datetime:
    try:
        at = datetime.fromisoformat(str(entry["at"]))
    except (KeyError, ValueError):
        return fallback
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def upgrade() -> None:
    op.create_table(
        "incident_confirmations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("once_key", sa.String(32), nullable=True),
        sa.Column("entry", sa.JSON(), nullable=False),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_confirmations_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_confirmations")),
        sa.UniqueConstraint(
            "incident_id", "once_key", name=op.f("uq_incident_confirmations_incident_id")
        ),
    )
    op.create_index(
        op.f("ix_incident_confirmations_incident_id"), "incident_confirmations", ["incident_id"]
    )
    conn = op.get_bind()
    found = conn.execute(sa.text("SELECT id, confirmations, opened_at FROM incidents ORDER BY id"))
    rows: list[dict[str, Any]] = []
    for incident_id, raw, opened_at in found.all():
        if isinstance(opened_at, str):
            opened_at = datetime.fromisoformat(opened_at)
        opened = opened_at if isinstance(opened_at, datetime) else datetime.now(UTC)
        if opened.tzinfo is None:
            opened = opened.replace(tzinfo=UTC)
        p0_seen = False
        for entry in _entries(raw):
            once = None
            if entry.get("severity") == "P0" and not p0_seen:
                once, p0_seen = "P0", True
            rows.append(
                {
                    "incident_id": incident_id,
                    "actor": str(entry.get("by") or "")[:64],
                    "once_key": once,
                    "entry": entry,
                    "created_at": _at(entry, opened),
                }
            )
    if rows:
        op.bulk_insert(_TABLE, rows)
    # Both backends drop a column in place (SQLite since 3.35): no table rebuild, which would
    # have to carry the partial unique index on open fingerprints over.
    op.execute("ALTER TABLE incidents DROP COLUMN confirmations")


def downgrade() -> None:
    op.add_column(
        "incidents",
        sa.Column("confirmations", sa.JSON(), nullable=False, server_default="[]"),
    )
    conn = op.get_bind()
    found = conn.execute(
        sa.text("SELECT incident_id, entry FROM incident_confirmations ORDER BY id")
    )
    lists: dict[int, list[Any]] = {}
    for incident_id, entry in found.all():
        lists.setdefault(incident_id, []).append(
            json.loads(entry) if isinstance(entry, str | bytes) else entry
        )
    update = sa.text("UPDATE incidents SET confirmations = :entries WHERE id = :id").bindparams(
        sa.bindparam("entries", type_=sa.JSON())
    )
    for incident_id, entries in lists.items():
        conn.execute(update, {"entries": entries, "id": incident_id})
    op.drop_index(
        op.f("ix_incident_confirmations_incident_id"), table_name="incident_confirmations"
    )
    op.drop_table("incident_confirmations")
