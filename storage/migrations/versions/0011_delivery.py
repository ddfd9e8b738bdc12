"""delivery: the times of messages sent to groups (pacing across restarts), and when the
running process registered each job (the watchdog's start-up grace)

Revision ID: 0011_delivery
Revises: 0007_outbox_in_flight
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0011_delivery"
down_revision: str | None = "0012_loop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_sends",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_sends")),
    )
    op.create_index(op.f("ix_outbox_sends_at"), "outbox_sends", ["at"], unique=False)
    with op.batch_alter_table("job_beats") as batch:
        batch.add_column(
            sa.Column("registered_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("job_beats") as batch:
        batch.drop_column("registered_at")
    op.drop_index(op.f("ix_outbox_sends_at"), table_name="outbox_sends")
    op.drop_table("outbox_sends")
