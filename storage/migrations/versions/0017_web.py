"""web: used sign-in links, the generated signing key, alerts from outside sources, and the
indexes the web pages page by

Revision ID: 0017_web
Revises: 0012_loop
Create Date: 2026-12-04 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0017_web"
down_revision: str | None = "0015_coding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_signins",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("used_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_web_signins")),
    )
    op.create_table(
        "web_keys",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_web_keys")),
    )
    op.create_table(
        "external_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("silence_id", sa.String(64), nullable=True),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_external_alerts_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_alerts")),
        sa.UniqueConstraint("incident_id", name=op.f("uq_external_alerts_incident_id")),
    )
    op.create_index("ix_tasks_status_id", "tasks", ["status", "id"])
    op.create_index("ix_outbox_feed_id", "outbox", ["feed", "id"])
    op.create_index("ix_runs_agent_id", "runs", ["agent_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_agent_id", table_name="runs")
    op.drop_index("ix_outbox_feed_id", table_name="outbox")
    op.drop_index("ix_tasks_status_id", table_name="tasks")
    op.drop_table("external_alerts")
    op.drop_table("web_keys")
    op.drop_table("web_signins")
