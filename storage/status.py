"""Read-only summaries of the fleet for /status."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import jobs, outbox
from storage.models import AgentState, Approval, Incident, JobBeat, Task

OPEN_TASK_STATUSES = ("backlog", "todo", "in_progress", "in_review", "blocked")
OPEN_INCIDENT_STATUSES = ("open", "acknowledged")


@dataclass
class FleetSummary:
    paused_agents: set[str] = field(default_factory=set)
    open_tasks: dict[str, int] = field(default_factory=dict)
    pending_approvals: int = 0
    open_incidents: dict[str, int] = field(default_factory=dict)
    jobs: list[JobBeat] = field(default_factory=list)
    outbox: dict[str, int] = field(default_factory=dict)


async def fleet_summary(session: AsyncSession) -> FleetSummary:
    summary = FleetSummary()
    paused = await session.execute(select(AgentState.agent_id).where(AgentState.paused))
    summary.paused_agents = set(paused.scalars())
    tasks = await session.execute(
        select(Task.status, func.count())
        .where(Task.status.in_(OPEN_TASK_STATUSES))
        .group_by(Task.status)
    )
    summary.open_tasks = {status: n for status, n in tasks.all()}
    approvals = await session.execute(
        select(func.count()).select_from(Approval).where(Approval.status == "pending")
    )
    summary.pending_approvals = approvals.scalar_one()
    incidents = await session.execute(
        select(Incident.severity, func.count())
        .where(Incident.status.in_(OPEN_INCIDENT_STATUSES))
        .group_by(Incident.severity)
    )
    summary.open_incidents = {severity: n for severity, n in incidents.all()}
    summary.jobs = await jobs.all_beats(session)
    summary.outbox = await outbox.counts(session)
    return summary
