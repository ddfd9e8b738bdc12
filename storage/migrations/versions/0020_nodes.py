"""nodes: one row per `fleet run` sharing the database; the probe slot claims of
check_state; the node that claimed each deploy run

Revision ID: 0020_nodes
Revises: 0016_pipelines
Create Date: 2026-12-04 22:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0020_nodes"
down_revision: str | None = "0016_pipelines"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("may_run", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_nodes")),
    )
    op.add_column("deploy_runs", sa.Column("node", sa.String(63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deploy_runs") as batch:
        batch.drop_column("node")
    op.drop_table("nodes")
