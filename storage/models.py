"""Tables for the whole vocabulary of docs/design.md.

Every status lives here and is changed only by the transition functions of `storage/`. Times
are stored in UTC; `UTCDateTime` makes that hold on SQLite, which has no time zones.

Over 400 lines on purpose: the schema is read as one page, beside the migrations that must
match it (tests/test_migrations.py compares the two); each class is a table and nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import Field
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.statuses import (
    ApprovalStatus,
    DeployStatus,
    ExecStatus,
    IncidentStatus,
    OutboxStatus,
    RunStatus,
    TaskStatus,
    TriageStatus,
)

# Row ids are INTEGER columns: 32 bits on PostgreSQL. A larger id (or 0) exists nowhere; it
# is answered like a missing one, never sent to the database (where it would overflow).
MAX_ID = 2**31 - 1
# A row id from outside (callback data): validation refuses what no row can have.
DbId = Annotated[int, Field(ge=1, le=MAX_ID)]


def is_row_id(value: int) -> bool:
    """Whether `value` can be a row id on every backend: check a person's id with this
    before it reaches a query."""
    return 0 < value <= MAX_ID


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class AgentState(Base):
    """What the database knows about an agent beyond its config: pause, backoff."""

    __tablename__ = "agent_state"

    agent_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_by: Mapped[str | None] = mapped_column(String(64))
    budget_usd_month: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    # The web board pages each status newest first.
    __table_args__ = (Index("ix_tasks_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    assignee: Mapped[str] = mapped_column(String(32), index=True)
    creator: Mapped[str] = mapped_column(String(64))  # "person:<telegram id>" or "agent:<id>"
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=2)  # 0 urgent .. 3 low
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.TODO, index=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    blocked_reason: Mapped[str | None] = mapped_column(Text)
    # Consecutive runs on this task that changed nothing; wakes for it back off after two.
    idle_runs: Mapped[int] = mapped_column(Integer, default=0)
    # Order among tasks of the same priority in the agent's nightly queue (lower first); /queue
    # moves a task up by giving it a rank below the one ahead of it.
    queue_rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TaskEvent(Base):
    """One thing that happened to a task: created, a status change, a comment, an assignment."""

    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One heartbeat turn of one agent. A queued run is a wake; wakes for an agent merge."""

    __tablename__ = "runs"
    # At most one queued run (wakes merge into it) and one running run per agent.
    __table_args__ = (
        Index("ix_runs_agent_status", "agent_id", "status"),
        Index("ix_runs_agent_id", "agent_id", "id"),  # an agent's last run
        Index(
            "uq_runs_queued_agent",
            "agent_id",
            unique=True,
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "uq_runs_running_agent",
            "agent_id",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    # schedule | assignment | comment | manual | retry | escalation | followup
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED, index=True)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal(0))
    changed_anything: Mapped[bool | None] = mapped_column(Boolean)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(Text)
    # A person asked to stop the run in flight ("person:<id>"): the process running it
    # abandons the model call and ends the run `cancelled` (storage.runs.request_stop).
    stop_requested_by: Mapped[str | None] = mapped_column(String(64))
    stop_requested_at: Mapped[datetime | None]


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(
        String(16)
    )  # deploy | action | publish | incident_p0 | budget
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requested_by: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    approvers: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"role": .., "people": [..]}
    required: Mapped[int] = mapped_column(Integer, default=1)
    deadline: Mapped[datetime | None]
    on_timeout: Mapped[str] = mapped_column(String(16), default="expire")  # escalate | expire
    status: Mapped[str] = mapped_column(String(16), default=ApprovalStatus.PENDING, index=True)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    reminded_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when an `escalate` timeout handed the approval to the next group (once).
    escalated_at: Mapped[datetime | None]


class ApprovalVote(Base):
    """One person's vote; the unique pair makes a second vote by the same person impossible."""

    __tablename__ = "approval_votes"
    __table_args__ = (UniqueConstraint("approval_id", "person_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    approval_id: Mapped[int] = mapped_column(ForeignKey("approvals.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(BigInteger)
    vote: Mapped[str] = mapped_column(String(8))  # approve | reject
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeployRun(Base):
    __tablename__ = "deploy_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(32), index=True)
    approval_id: Mapped[int | None] = mapped_column(ForeignKey("approvals.id"), unique=True)
    ref: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=DeployStatus.PENDING)
    steps: Mapped[list[Any]] = mapped_column(default=list)
    output_tail: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    node: Mapped[str | None] = mapped_column(String(63))  # the node that claimed it


class Incident(Base):
    __tablename__ = "incidents"
    # One open incident per fingerprint, on both backends.
    __table_args__ = (
        Index(
            "uq_incidents_open_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=text("status IN ('open', 'acknowledged', 'silenced')"),
            postgresql_where=text("status IN ('open', 'acknowledged', 'silenced')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(2))  # P3 .. P0
    requested_severity: Mapped[str | None] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.OPEN, index=True)
    title: Mapped[str] = mapped_column(String(200))
    details: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(64))  # "check:<id>" or "agent:<id>"
    silenced_until: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    # The alerts-feed message that announced it (an outbox dedup key; one message may announce
    # a group of incidents) and when; None while it waits for group_wait or its gate.
    alert_key: Mapped[str | None] = mapped_column(String(200), index=True)
    alerted_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))


class IncidentConfirmation(Base):
    """One event of an incident's escalation record: a confirmation (P1, P0), a request for a
    higher severity, a raise, a P0 decision, a note, a silence that ended. Each is its own row,
    added in the transaction of the change it records (never a rewrite of a list); `once_key`
    names an event an incident has at most once (its P0 confirmation), so two racing writers
    add it once."""

    __tablename__ = "incident_confirmations"
    __table_args__ = (UniqueConstraint("incident_id", "once_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    actor: Mapped[str] = mapped_column(String(64))  # who: the entry's "by", "" if none
    once_key: Mapped[str | None] = mapped_column(String(32))
    entry: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"by": ..., "at": ..., ...}
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Silence(Base):
    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matcher: Mapped[str] = mapped_column(String(128))  # a check id or a fingerprint
    until: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Outbox(Base):
    """One outbound Telegram message. Rows are written first, then the sender delivers them."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_chat", "status", "chat_id", "id"),
        Index("ix_outbox_feed_id", "feed", "id"),  # the web activity page, newest first
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed: Mapped[str | None] = mapped_column(String(16))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    topic: Mapped[int | None] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    buttons: Mapped[list[Any] | None] = mapped_column(JSON)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    # The dedup key of an earlier row: this row edits that message (edit_of) or replies to it.
    edit_of: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    parts_sent: Mapped[int] = mapped_column(Integer, default=0)
    # Set just before a part goes to Telegram, cleared once the outcome is recorded. Still set
    # when the row is next read means the process died mid-send: the part may have arrived.
    in_flight_at: Mapped[datetime | None]
    sent_message_ids: Mapped[list[Any]] = mapped_column(default=list)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class OutboxSend(Base):
    """One message the sender handed to Telegram: the pacing state (20 messages a minute per
    group, one a second per chat) that must outlive a restart or a change of leader. Rows
    older than two minutes are deleted."""

    __tablename__ = "outbox_sends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(index=True)


class Usage(Base):
    """One LLM call."""

    __tablename__ = "usage"
    # Every budgeted model call sums the agent's month (agents.budget): from the index alone.
    __table_args__ = (Index("ix_usage_agent_month", "agent_id", "created_at", "cost_usd"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str | None] = mapped_column(String(32), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(16), default="turn")  # turn | triage | ...
    model: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(32))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # The part of cache_write_tokens written to the 1-hour cache (priced higher).
    cache_write_1h_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cache_read_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal(0))
    price_known: Mapped[bool] = mapped_column(Boolean, default=True)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    fallback_used: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | error
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class JobBeat(Base):
    """The last start, finish and error of each scheduled job, read by the watchdog."""

    __tablename__ = "job_beats"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    interval_s: Mapped[int | None] = mapped_column(Integer)
    last_start: Mapped[datetime | None]
    last_finish: Mapped[datetime | None]
    last_success: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    # When the running process registered the job: a job that has not run since is not late
    # before its first interval after that (a fresh start is not an outage).
    registered_at: Mapped[datetime | None]
    runs: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)


class TriageItem(Base):
    """One email judged once, across restarts and across mailboxes that share it."""

    __tablename__ = "triage_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(512), unique=True)
    mailbox: Mapped[str] = mapped_column(String(32))
    backend_id: Mapped[str] = mapped_column(String(256))
    sender: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(500))
    verdict: Mapped[str | None] = mapped_column(String(8))  # urgent | normal | ignore
    reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(8))  # rule | model
    status: Mapped[str] = mapped_column(String(16), default=TriageStatus.NEW)
    received_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    snoozed_until: Mapped[datetime | None]
    snoozes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    acted_by: Mapped[str | None] = mapped_column(String(64))
    acted_at: Mapped[datetime | None]
    task_id: Mapped[int | None] = mapped_column(Integer)
    decided_at: Mapped[datetime | None]
    importance: Mapped[str | None] = mapped_column(String(8))


class InboxMessage(Base):
    """A message for an agent, read on its next heartbeat: escalations from reports, notes to
    the hub, oversight notices. Agents never message each other except through the hub."""

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_agent_unread", "agent_id", "read_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # escalation | message | oversight
    source: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    body: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CheckState(Base):
    """What the last probes of a health check found, and its recovery attempts this hour."""

    __tablename__ = "check_state"

    check_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    up: Mapped[bool | None] = mapped_column(Boolean)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_successes: Mapped[int] = mapped_column(Integer, default=0)
    last_checked_at: Mapped[datetime | None]
    last_detail: Mapped[str | None] = mapped_column(Text)
    recover_window_start: Mapped[datetime | None]
    recover_count: Mapped[int] = mapped_column(Integer, default=0)
    next_recover_at: Mapped[datetime | None]
    last_recover_at: Mapped[datetime | None]
    last_recover_outcome: Mapped[str | None] = mapped_column(Text)


class MailboxState(Base):
    """What a mailbox's triage job remembers between passes: how far it has read and how
    many passes in a row have failed (an incident opens at the configured threshold)."""

    __tablename__ = "mailbox_state"

    mailbox_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(128))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_success_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApprovalEvent(Base):
    """The audit trail of an approval: request, vote, decision, reminder, escalation, expiry,
    deploy. Written in the same transaction as the change it records."""

    __tablename__ = "approval_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    approval_id: Mapped[int] = mapped_column(
        ForeignKey("approvals.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Artifact(Base):
    """One file an agent wrote, or a command's saved output: where it is and what it held
    (sha256) when written, so that evidence naming it can be verified later."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(Integer)
    agent_id: Mapped[str] = mapped_column(String(32))
    root: Mapped[str] = mapped_column(String(32))  # "workspace" or a [[folders]] id
    path: Mapped[str] = mapped_column(String(1024))  # relative to the root
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="file")  # file | command
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ExecRun(Base):
    """One command run by run_command: at once (allowed) or once its `exec` approval was
    approved (approval_id, unique: the idempotency key). A run found `running` at start died
    with the process: it is `interrupted`, never re-run."""

    __tablename__ = "exec_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    approval_id: Mapped[int | None] = mapped_column(ForeignKey("approvals.id"), unique=True)
    agent_id: Mapped[str] = mapped_column(String(32), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    run_id: Mapped[int | None] = mapped_column(Integer)
    argv: Mapped[list[Any]] = mapped_column(default=list)
    cwd: Mapped[str] = mapped_column(String(1024))  # root:relative
    timeout_s: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ExecStatus.PENDING)
    allowed_by: Mapped[str] = mapped_column(String(64))  # policy | rule #n | person:<id>
    exit_code: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None]
    output_tail: Mapped[str] = mapped_column(Text, default="")
    artifact_id: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None]
    node: Mapped[str | None] = mapped_column(String(63))  # the node that claimed it
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExecRule(Base):
    """An "always allow" a person granted: this agent may run this exact argv without asking.
    Revoking sets revoked_at; the row stays for the record."""

    __tablename__ = "exec_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(32), index=True)
    argv: Mapped[list[Any]] = mapped_column(default=list)
    granted_by: Mapped[str] = mapped_column(String(64))
    approval_id: Mapped[int | None] = mapped_column(ForeignKey("approvals.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_by: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]


class MessageLink(Base):
    """Which entity a message the bot sent directly (not through the outbox) shows: a /task
    card, a "send back" prompt. A reply to the message acts on that entity; `person_id` is
    set for a prompt only its presser may answer."""

    __tablename__ = "message_links"
    __table_args__ = (Index("ix_message_links_message", "chat_id", "message_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # task | sendback
    entity_id: Mapped[int] = mapped_column(BigInteger)
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Publication(Base):
    """One thing an agent asked to publish to a publish target. Its id is the idempotency
    key of the outside call: `sending` is written before the call, so a crash between the
    call and recording it leaves `sending`, reported `unknown` at start, never re-sent."""

    __tablename__ = "publications"
    __table_args__ = (Index("ix_publications_target", "target", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # telegram | webhook | folder
    agent_id: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    source: Mapped[str | None] = mapped_column(String(1024))  # root:path of a published file
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    # pending | approved | sending | published | unverified | unknown | failed | rejected
    # | refused
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    approval_id: Mapped[int | None] = mapped_column(Integer)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    location: Mapped[str | None] = mapped_column(String(1024))  # a URL or a file written
    started_at: Mapped[datetime | None]
    node: Mapped[str | None] = mapped_column(String(63))  # the node that claimed it
    published_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PipelineRun(Base):
    """One run of a configured pipeline: a parent task and a step row per step; the files
    the steps hand forward live in `<folder>/<run id>/`."""

    __tablename__ = "pipeline_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(Text)
    folder: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    status: Mapped[str] = mapped_column(String(16), index=True)  # running | done | blocked
    reason: Mapped[str] = mapped_column(Text, default="")  # | cancelled
    requested_by: Mapped[str] = mapped_column(String(64))
    chat_id: Mapped[int | None] = mapped_column(BigInteger)  # where its message is kept
    topic_id: Mapped[int | None] = mapped_column(Integer)
    shown: Mapped[int] = mapped_column(Integer, default=0)  # versions of its message queued
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class PipelineStep(Base):
    """One step of a pipeline run: waiting, then running (its subtask `task_id` assigned),
    then done, or failed / blocked (which blocks the run) or cancelled."""

    __tablename__ = "pipeline_steps"
    __table_args__ = (UniqueConstraint("run_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(32))
    agent: Mapped[str] = mapped_column(String(32))
    produces: Mapped[str | None] = mapped_column(String(64))
    consumes: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class WebSignin(Base):
    """A sign-in link that was used: each link works once (its token id is the key)."""

    __tablename__ = "web_signins"

    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebKey(Base):
    """A key the web server generated once (the signing key when the config gives none)."""

    __tablename__ = "web_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExternalAlert(Base):
    """An alert from an outside source (Alertmanager, a script) behind an incident: its labels
    (the matchers of a silence made there) and the silence made for it, if any."""

    __tablename__ = "external_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), unique=True
    )
    source: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(128))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    silence_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Node(Base):
    """One `fleet run` process sharing the database: who it is, when it last said it was
    alive, its role (leader or standby) and what it may run (storage.nodes)."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]  # a clean stop: not reported as a node gone silent
    role: Mapped[str] = mapped_column(String(16))
    # {"agents": [...], "checks": [...], "deploys": [...]}: the ids this node may run
    may_run: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ProfileState(Base):
    """What every node knows about one key profile: a (model, profile) pair cooling down after
    a 429, and (`model` empty) the mark of a key Anthropic rejected. Shared through the
    database so that a 429 or a 401 seen by one node is respected by all of them."""

    __tablename__ = "profile_state"

    profile: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)  # "": the profile itself
    cooling_until: Mapped[datetime | None]
    # A digest of the key that was rejected (agents.failover.key_digest): a new key in the
    # config is not covered by the mark of the old one.
    rejected_key: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetHold(Base):
    """The worst-case cost of a model call in flight, counted against its agent's (and the
    fleet's) budget until the call's usage row replaces it. A hold left by a crash stops
    counting at `expires_at`."""

    __tablename__ = "budget_holds"
    __table_args__ = (Index("ix_budget_holds_agent_id", "agent_id", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(32))
    usd: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TelegramUpdate(Base):
    """An update the leader received (storage.updates), recorded before Telegram is told it
    arrived; `handled_at` is set in the transaction that handles it. A new leader handles the
    ones a dead leader had not, and drops one Telegram delivers again."""

    __tablename__ = "telegram_updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(String(64))  # the node that received (then handled) it
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    payload: Mapped[dict[str, Any] | None]  # the update as Telegram sent it; None if fed
    handled_at: Mapped[datetime | None]


class JobSlot(Base):
    """One scheduled time of one fleet-wide job, claimed by the node that runs it
    (storage.slots): a takeover neither skips nor doubles a slot."""

    __tablename__ = "job_slots"

    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    slot: Mapped[datetime] = mapped_column(primary_key=True, index=True)
    node: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
