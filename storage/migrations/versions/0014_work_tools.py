"""work tools: artifacts, exec runs and exec rules

Revision ID: 0014_work_tools
Revises: 0007_outbox_in_flight
Create Date: 2026-12-04 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0014_work_tools"
down_revision: str | None = "0007_outbox_in_flight"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column("root", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_artifacts_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
    )
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_artifacts_task_id"), ["task_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_artifacts_created_at"), ["created_at"], unique=False)
    op.create_table(
        "exec_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("argv", sa.JSON(), nullable=False),
        sa.Column("cwd", sa.String(length=1024), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("allowed_by", sa.String(length=64), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("output_tail", sa.Text(), nullable=False),
        sa.Column("artifact_id", sa.Integer(), nullable=True),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["approval_id"], ["approvals.id"], name=op.f("fk_exec_runs_approval_id_approvals")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_exec_runs_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exec_runs")),
        sa.UniqueConstraint("approval_id", name=op.f("uq_exec_runs_approval_id")),
    )
    with op.batch_alter_table("exec_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exec_runs_agent_id"), ["agent_id"], unique=False)
    op.create_table(
        "exec_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column("argv", sa.JSON(), nullable=False),
        sa.Column("granted_by", sa.String(length=64), nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["approval_id"], ["approvals.id"], name=op.f("fk_exec_rules_approval_id_approvals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exec_rules")),
    )
    with op.batch_alter_table("exec_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exec_rules_agent_id"), ["agent_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("exec_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exec_rules_agent_id"))
    op.drop_table("exec_rules")
    with op.batch_alter_table("exec_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exec_runs_agent_id"))
    op.drop_table("exec_runs")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_artifacts_created_at"))
        batch_op.drop_index(batch_op.f("ix_artifacts_task_id"))
    op.drop_table("artifacts")
