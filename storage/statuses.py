"""Every lifecycle's statuses, one StrEnum each.

A status is stored as its string value (the columns stay `String`), so a StrEnum member
compares equal to the text in the database and in old rows; code names members instead of
re-typing strings. The allowed moves between statuses live with each lifecycle's transition
functions in storage/, not here: this module is vocabulary only and imports nothing of ours.
"""

from __future__ import annotations

from enum import StrEnum

# Task priorities: the name a person or an agent gives -> the stored number (lower is sooner).
PRIORITIES: dict[str, int] = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


class TaskStatus(StrEnum):
    BACKLOG = "backlog"
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    DONE = "done"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class BudgetRequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class DeployStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class ExecStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"  # the command exited (any exit code)
    TIMED_OUT = "timed_out"
    FAILED = "failed"  # it could not start (a missing program, a cwd gone)
    INTERRUPTED = "interrupted"


class IncidentStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"
    RESOLVED = "resolved"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class PipelineStatus(StrEnum):
    """Of a pipeline run and of each of its steps (`WAITING` and `FAILED` are steps' only)."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    BLOCKED = "blocked"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PublicationStatus(StrEnum):
    AWAITING = "pending"  # its approval is pending
    APPROVED = "approved"  # waits for the publish worker
    PUBLISHING = "sending"  # the outside call was (or is being) made
    PUBLISHED = "published"  # made and verified
    UNVERIFIED = "unverified"  # made, but the result could not be seen
    UNKNOWN = "unknown"  # a crash hid whether the call was made
    FAILED = "failed"
    REJECTED = "rejected"  # its approval was rejected or expired
    REFUSED = "refused"  # a guard said no


class TriageStatus(StrEnum):
    NEW = "new"  # seen, not decided yet
    OPEN = "open"  # decided; nobody acted on it
    TASKED = "tasked"
    READ = "read"
    SNOOZED = "snoozed"
    DISMISSED = "dismissed"


class TriageVerdict(StrEnum):
    URGENT = "urgent"
    NORMAL = "normal"
    IGNORE = "ignore"
