"""Read-only summaries of the fleet for /status."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sqlalchemy import String, func, literal_column, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from storage import incidents, jobs, nodes
from storage.db import Database
from storage.models import (
    AgentState,
    Approval,
    Incident,
    JobBeat,
    Node,
    Outbox,
    Run,
    Silence,
    Task,
)
from storage.statuses import ApprovalStatus, IncidentStatus, OutboxStatus, RunStatus
from storage.task_queries import OPEN

OPEN_TASK_STATUSES = OPEN  # what /status counts
OPEN_INCIDENT_STATUSES = (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED)
RUNNING_SHOWN = 10  # runs in flight listed by /status (max_concurrent_runs is 4 by default)


@dataclass
class FleetSummary:
    paused_agents: set[str] = field(default_factory=set)
    open_tasks: dict[str, int] = field(default_factory=dict)
    pending_approvals: int = 0
    open_incidents: dict[str, int] = field(default_factory=dict)
    jobs: list[JobBeat] = field(default_factory=list)
    outbox: dict[str, int] = field(default_factory=dict)
    silences: list[Silence] = field(default_factory=list)
    running: list[Run] = field(default_factory=list)  # runs in flight, oldest first
    nodes: list[Node] = field(default_factory=list)
    node_runs: dict[str, int] = field(default_factory=dict)  # runs in flight per node name


async def fleet_summary(session: AsyncSession) -> FleetSummary:
    """Everything /status shows, in six queries (it is the most frequent command)."""
    statement = union_all(
        select(literal_column("'paused'", String), AgentState.agent_id, func.count())
        .where(AgentState.paused)
        .group_by(AgentState.agent_id),
        select(literal_column("'task'", String), Task.status, func.count())
        .where(Task.status.in_(OPEN_TASK_STATUSES))
        .group_by(Task.status),
        select(
            literal_column("'approval'", String), literal_column("'pending'", String), func.count()
        )
        .select_from(Approval)
        .where(Approval.status == ApprovalStatus.PENDING),
        select(literal_column("'incident'", String), Incident.severity, func.count())
        .where(Incident.status.in_(OPEN_INCIDENT_STATUSES))
        .group_by(Incident.severity),
        select(literal_column("'outbox'", String), Outbox.status, func.count())
        .where(Outbox.status != OutboxStatus.SENT)
        .group_by(Outbox.status),
    )
    summary = FleetSummary()
    for kind, key, count in (await session.execute(statement)).all():
        if kind == "paused":
            summary.paused_agents.add(key)
        elif kind == "task":
            summary.open_tasks[key] = count
        elif kind == "approval":
            summary.pending_approvals = count
        elif kind == "incident":
            summary.open_incidents[key] = count
        else:
            summary.outbox[key] = count
    summary.jobs = await jobs.all_beats(session)
    summary.silences = await incidents.active_silences(session)
    found = await session.execute(
        select(Run)
        .where(Run.status == RunStatus.RUNNING)
        .order_by(Run.started_at)
        .limit(RUNNING_SHOWN)
    )
    summary.running = list(found.scalars())
    summary.nodes = await nodes.all_nodes(session)
    summary.node_runs = await nodes.runs_in_flight(session, summary.nodes)
    return summary


class SummaryCache:
    """/status may be pressed by many people at once (or spammed in a group): concurrent
    requests share one read, and a read is reused for `ttl` seconds. Still read from the
    database, at most `ttl` old."""

    def __init__(self, db: Database, ttl: float = 1.0) -> None:
        self.db = db
        self.ttl = ttl
        self._read_at = -1e9
        self._current: asyncio.Future[FleetSummary] | None = None

    async def get(self) -> FleetSummary:
        now = time.monotonic()
        if self._current is None or (self._current.done() and now - self._read_at > self.ttl):
            self._read_at = now
            self._current = asyncio.ensure_future(self._read())
        try:
            return await asyncio.shield(self._current)
        except Exception:
            self._current = None  # a failed read is not reused
            raise

    async def _read(self) -> FleetSummary:
        async with self.db.session() as session:
            return await fleet_summary(session)
