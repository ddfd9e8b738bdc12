"""runs: who asked to stop a run in flight; message_links: what a directly sent message shows

Revision ID: 0012_loop
Revises: 0007_outbox_in_flight
Create Date: 2026-12-04 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0012_loop"
down_revision: str | None = "0014_work_tools"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("stop_requested_by", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column(
                "stop_requested_at", storage.models.UTCDateTime(timezone=True), nullable=True
            )
        )
    op.create_table(
        "message_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_links")),
    )
    op.create_index("ix_message_links_message", "message_links", ["chat_id", "message_id"])


def downgrade() -> None:
    op.drop_index("ix_message_links_message", table_name="message_links")
    op.drop_table("message_links")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stop_requested_at")
        batch.drop_column("stop_requested_by")
