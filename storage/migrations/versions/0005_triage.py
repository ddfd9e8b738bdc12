"""triage: mailbox state, snooze and action fields on triage items

Revision ID: 0005_triage
Revises: 0004_incidents
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0005_triage"
down_revision: str | None = "0004_incidents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailbox_state",
        sa.Column("mailbox_id", sa.String(length=32), nullable=False),
        sa.Column("cursor", sa.String(length=128), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_success_at", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox_id", name=op.f("pk_mailbox_state")),
    )
    with op.batch_alter_table("triage_items") as batch:
        batch.add_column(
            sa.Column("snoozed_until", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("snoozes", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("acted_by", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("acted_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("task_id", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("decided_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("importance", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("triage_items") as batch:
        for column in (
            "importance",
            "decided_at",
            "task_id",
            "acted_at",
            "acted_by",
            "snoozes",
            "snoozed_until",
        ):
            batch.drop_column(column)
    op.drop_table("mailbox_state")
