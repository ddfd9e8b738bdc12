"""Reading tasks: pages for /tasks, a task's history and news, what a run works on next.
Nothing here changes a row (storage/tasks.py does); storage.tasks re-exports these."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Task, TaskEvent
from storage.statuses import TaskStatus

OPEN = (
    TaskStatus.BACKLOG,
    TaskStatus.TODO,
    TaskStatus.IN_PROGRESS,
    TaskStatus.IN_REVIEW,
    TaskStatus.BLOCKED,
)
ACTIVE = (TaskStatus.TODO, TaskStatus.IN_PROGRESS)  # what a heartbeat works on


async def events(session: AsyncSession, task_id: int, limit: int = 50) -> list[TaskEvent]:
    stmt = (
        select(TaskEvent)
        .where(TaskEvent.task_id == task_id)
        .order_by(TaskEvent.id.desc())
        .limit(limit)
    )
    return list(reversed((await session.execute(stmt)).scalars().all()))


async def listing(
    session: AsyncSession,
    *,
    assignee: str | None = None,
    statuses: tuple[str, ...] = OPEN,
    offset: int = 0,
    limit: int = 10,
) -> tuple[list[Task], int]:
    """A page of tasks (most urgent, then oldest first) and the total count."""
    where: list[ColumnElement[bool]] = [Task.status.in_(statuses)]
    if assignee is not None:
        where.append(Task.assignee == assignee)
    total = (
        await session.execute(select(func.count()).select_from(Task).where(*where))
    ).scalar_one()
    stmt = select(Task).where(*where).order_by(Task.priority, Task.id).offset(offset).limit(limit)
    return list((await session.execute(stmt)).scalars()), total


async def next_for(
    session: AsyncSession, agent_id: str, task_id: int | None, *, news: bool = False
) -> Task | None:
    """The task a run of `agent_id` should work on: the one it was woken for, if still
    active (or, with `news` for it, whatever its status but done or cancelled: a comment on
    a task in review is read), else its most urgent active task."""
    if task_id is not None:
        task = await session.get(Task, task_id, populate_existing=True)
        workable = ACTIVE if not news else (*OPEN, *ACTIVE)
        if task is not None and task.assignee == agent_id and task.status in workable:
            return task
    stmt = (
        select(Task)
        .where(Task.assignee == agent_id, Task.status.in_(ACTIVE))
        .order_by(Task.priority, Task.id)
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def news(
    session: AsyncSession, task_id: int, agent_id: str, since: datetime | None
) -> list[TaskEvent]:
    """What others wrote on the task (comments, decisions, reports, status changes) since
    `since` (the start of the agent's last run on it; None: ever), oldest first."""
    stmt = select(TaskEvent).where(
        TaskEvent.task_id == task_id,
        TaskEvent.actor != f"agent:{agent_id}",
        TaskEvent.kind.in_(("comment", "status", "assigned")),
    )
    if since is not None:
        stmt = stmt.where(TaskEvent.created_at > since)
    return list((await session.execute(stmt.order_by(TaskEvent.id).limit(20))).scalars())


async def active_counts(session: AsyncSession, agent_ids: list[str]) -> dict[str, int]:
    stmt = (
        select(Task.assignee, func.count())
        .where(Task.assignee.in_(agent_ids), Task.status.in_(ACTIVE))
        .group_by(Task.assignee)
    )
    return {agent: n for agent, n in (await session.execute(stmt)).all()}
