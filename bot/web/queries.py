"""What the web pages show, read from the database: each page a few indexed queries, lists
paged by id (keyset), so a page costs the same with 100 or 100,000 tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config
from storage import incidents, tasks, usage
from storage.models import (
    AgentState,
    Approval,
    Artifact,
    Incident,
    JobBeat,
    Outbox,
    Run,
    Task,
    TaskEvent,
    utcnow,
)
from storage.statuses import ApprovalStatus, IncidentStatus, RunStatus

PAGE = 50
FEEDS = ("activity", "alerts")


@dataclass
class AgentRow:
    id: str
    title: str
    status: str  # working | idle | paused | over budget
    current_task: Task | None = None
    last_run: Run | None = None
    spent: Decimal = Decimal(0)
    budget: Decimal | None = None
    next_heartbeat: datetime | None = None


async def fleet(session: AsyncSession, config: Config) -> list[AgentRow]:
    ids = [agent.id for agent in config.agents]
    paused = set(
        (
            await session.execute(
                select(AgentState.agent_id).where(AgentState.paused, AgentState.agent_id.in_(ids))
            )
        ).scalars()
    )
    running = {
        run.agent_id: run
        for run in (
            await session.execute(
                select(Run).where(Run.status == RunStatus.RUNNING, Run.agent_id.in_(ids))
            )
        ).scalars()
    }
    # The last finished run of each agent: one indexed lookup per agent (ix_runs_agent_id).
    last_ids = [
        select(func.max(Run.id))
        .where(Run.agent_id == agent_id, Run.status.not_in((RunStatus.QUEUED, RunStatus.RUNNING)))
        .scalar_subquery()
        for agent_id in ids
    ]
    last: dict[str, Run] = {}
    if last_ids:
        found_ids = [i for i in (await session.execute(select(*last_ids))).one() if i]
        if found_ids:
            rows = await session.execute(select(Run).where(Run.id.in_(found_ids)))
            last = {run.agent_id: run for run in rows.scalars()}
    task_ids = [run.task_id for run in running.values() if run.task_id]
    current: dict[int, Task] = {}
    if task_ids:
        found = await session.execute(select(Task).where(Task.id.in_(task_ids)))
        current = {task.id: task for task in found.scalars()}
    spent = await usage.spend_since(session, usage.month_start(), ids)
    budgets = await usage.budgets(session, {a.id: a.budget_usd_month for a in config.agents})
    out = []
    for agent in config.agents:
        run = running.get(agent.id)
        budget = budgets.get(agent.id)
        status = "working" if run else "idle"
        if agent.id in paused:
            status = "paused"
        if budget is not None and spent.get(agent.id, Decimal(0)) >= budget:
            status = "over budget"
        out.append(
            AgentRow(
                id=agent.id,
                title=agent.title,
                status=status,
                current_task=current.get(run.task_id) if run and run.task_id else None,
                last_run=last.get(agent.id),
                spent=spent.get(agent.id, Decimal(0)),
                budget=budget,
            )
        )
    return out


async def activity(
    session: AsyncSession, *, agent: str = "", before: int | None = None, after: int = 0
) -> list[Outbox]:
    """Lines of the activity and alerts feeds, newest first (ix_outbox_feed_id). A run's line
    shows as its first post and its last edit (how it ended); the progress edits between,
    one every few seconds, are left out."""
    stmt = select(Outbox).where(
        Outbox.feed.in_(FEEDS), Outbox.id > after, ~Outbox.dedup_key.contains(":at:")
    )
    if before is not None:
        stmt = stmt.where(Outbox.id < before)
    if agent:
        stmt = stmt.where(Outbox.text.contains(agent, autoescape=True))
    return list((await session.execute(stmt.order_by(Outbox.id.desc()).limit(PAGE))).scalars())


@dataclass
class Column:
    status: str
    count: int
    tasks: list[Task] = field(default_factory=list)
    next_before: int | None = None


async def board(
    session: AsyncSession, *, status: str = "", before: int | None = None
) -> list[Column]:
    """Each status's newest tasks (ix_tasks_status_id); one status's next page with `before`."""
    counts = dict(
        (await session.execute(select(Task.status, func.count()).group_by(Task.status))).all()
    )
    shown = [status] if status in tasks.STATUSES else list(tasks.STATUSES)
    size = PAGE if status else 10
    columns = []
    for name in shown:
        stmt = select(Task).where(Task.status == name)
        if before is not None and status:
            stmt = stmt.where(Task.id < before)
        rows = list(
            (await session.execute(stmt.order_by(Task.id.desc()).limit(size + 1))).scalars()
        )
        more = len(rows) > size
        rows = rows[:size]
        columns.append(
            Column(name, int(counts.get(name, 0)), rows, rows[-1].id if more and rows else None)
        )
    return columns


@dataclass
class TaskPage:
    task: Task
    events: list[TaskEvent]
    artifacts: list[Artifact]
    runs: list[Run]
    subtasks: list[Task]


async def task_page(session: AsyncSession, task_id: int) -> TaskPage | None:
    task = await session.get(Task, task_id)
    if task is None:
        return None

    async def rows(stmt: Any) -> list[Any]:
        return list((await session.execute(stmt.limit(200))).scalars())

    return TaskPage(
        task,
        await rows(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)),
        await rows(select(Artifact).where(Artifact.task_id == task_id).order_by(Artifact.id)),
        await rows(select(Run).where(Run.task_id == task_id).order_by(Run.id.desc())),
        await rows(select(Task).where(Task.parent_id == task_id).order_by(Task.id)),
    )


async def approvals(session: AsyncSession) -> tuple[list[Approval], list[Approval]]:
    """Pending ones, then the 50 most recently decided."""
    pending = await session.execute(
        select(Approval)
        .where(Approval.status == ApprovalStatus.PENDING)
        .order_by(Approval.id)
        .limit(200)
    )
    decided = await session.execute(
        select(Approval)
        .where(Approval.status != ApprovalStatus.PENDING)
        .order_by(Approval.id.desc())
        .limit(PAGE)
    )
    return list(pending.scalars()), list(decided.scalars())


async def incident_lists(session: AsyncSession) -> tuple[list[Incident], list[Incident]]:
    """Live ones (most severe first), then the 50 most recently resolved."""
    live = await incidents.listing(session, limit=200)
    resolved = await session.execute(
        select(Incident)
        .where(Incident.status == IncidentStatus.RESOLVED)
        .order_by(Incident.id.desc())
        .limit(PAGE)
    )
    return live, list(resolved.scalars())


@dataclass
class Costs:
    month: date
    last_month: date
    daily: dict[str, dict[date, Decimal]]
    table: list[usage.Row]
    last_table: list[usage.Row]


async def costs(session: AsyncSession) -> Costs:
    month = usage.month_of()
    last_month = (month.replace(day=1) - timedelta(days=1)).replace(day=1)
    return Costs(
        month,
        last_month,
        await usage.daily_spend(session, month),
        await usage.month_table(session, month),
        await usage.month_table(session, last_month),
    )


async def job_beats(session: AsyncSession) -> list[JobBeat]:
    return list((await session.execute(select(JobBeat).order_by(JobBeat.job_id))).scalars())


async def watchdog_findings(session: AsyncSession) -> list[Incident]:
    """The watchdog's live findings: its incidents (fingerprint `watchdog:<key>`)."""
    stmt = (
        select(Incident)
        .where(Incident.fingerprint.startswith("watchdog:"), Incident.status.in_(incidents.LIVE))
        .order_by(Incident.id)
        .limit(100)
    )
    return list((await session.execute(stmt)).scalars())


def age_seconds(at: datetime | None) -> float | None:
    return None if at is None else (utcnow() - at).total_seconds()
