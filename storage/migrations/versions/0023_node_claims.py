"""The node that claimed an exec run or a publication.

On a shared database each node recovers at start only what it claimed itself: the commands
and webhook calls of other nodes are alive, not interrupted.

Revision ID: 0023_node_claims
Revises: 0019_leader
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0023_node_claims"
down_revision: str | None = "0019_leader"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("exec_runs", sa.Column("node", sa.String(length=63), nullable=True))
    op.add_column("publications", sa.Column("node", sa.String(length=63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.drop_column("node")
    with op.batch_alter_table("exec_runs") as batch:
        batch.drop_column("node")
