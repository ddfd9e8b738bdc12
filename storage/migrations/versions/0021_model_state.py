"""profile_state, budget_holds: model state shared by every node

Key-profile cooldowns and the "key rejected" mark move from one process's memory to the
database; a model call reserves its worst-case cost as a budget hold before it is made (and
sums its agent's month from a new covering index on usage). The marks of keys rejected
before this migration (known from their alerts' dedup keys) are kept.

Revision ID: 0021_model_state
Revises: 0022_approvals
Create Date: 2026-12-04 22:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0021_model_state"
down_revision: str | None = "0022_approvals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    state = op.create_table(
        "profile_state",
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("cooling_until", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("rejected_key", sa.String(16), nullable=True),
        sa.Column("updated_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("profile", "model", name=op.f("pk_profile_state")),
    )
    op.create_table(
        "budget_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("usd", sa.Numeric(12, 6), nullable=False),
        sa.Column("expires_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_holds")),
    )
    op.create_index("ix_budget_holds_agent_id", "budget_holds", ["agent_id", "expires_at"])
    # Each budgeted call sums its agent's month: a covering index keeps that off the table.
    op.create_index("ix_usage_agent_month", "usage", ["agent_id", "created_at", "cost_usd"])
    # Before this revision a rejected key was remembered by its alert, keyed
    # "key-rejected:<profile>:<digest>"; the newest alert of each profile is its mark.
    found = op.get_bind().execute(
        sa.text("SELECT dedup_key FROM outbox WHERE dedup_key LIKE 'key-rejected:%' ORDER BY id")
    )
    marks: dict[str, str] = {}
    for (key,) in found:
        parts = str(key).split(":")
        if len(parts) == 3 and parts[1] and parts[2]:
            marks[parts[1][:32]] = parts[2][:16]
    if marks:
        op.bulk_insert(
            state,
            [
                {
                    "profile": profile,
                    "model": "",
                    "cooling_until": None,
                    "rejected_key": digest,
                    "updated_at": storage.models.utcnow(),
                }
                for profile, digest in marks.items()
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_usage_agent_month", table_name="usage")
    op.drop_index("ix_budget_holds_agent_id", table_name="budget_holds")
    op.drop_table("budget_holds")
    op.drop_table("profile_state")
