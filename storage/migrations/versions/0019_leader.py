"""telegram_updates, job_slots: the ledgers that make updates and scheduled slots run once
across a leader takeover

Revision ID: 0019_leader
Revises: 0021_model_state
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0019_leader"
down_revision: str | None = "0021_model_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telegram_updates",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("received_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("handled_at", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("update_id", name=op.f("pk_telegram_updates")),
    )
    op.create_index(op.f("ix_telegram_updates_received_at"), "telegram_updates", ["received_at"])
    op.create_table(
        "job_slots",
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("slot", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("claimed_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "slot", name=op.f("pk_job_slots")),
    )
    op.create_index(op.f("ix_job_slots_slot"), "job_slots", ["slot"])


def downgrade() -> None:
    op.drop_index(op.f("ix_job_slots_slot"), table_name="job_slots")
    op.drop_table("job_slots")
    op.drop_index(op.f("ix_telegram_updates_received_at"), table_name="telegram_updates")
    op.drop_table("telegram_updates")
