"""A coding agent's nightly queue: its `todo` tasks, most urgent first (priority, then the
rank /queue gives, then oldest). Moving a task up gives it a rank (and, if needed, the
priority) of the task ahead of it; taking it out moves it back to the backlog."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import tasks
from storage.models import Task, utcnow
from storage.statuses import TaskStatus
from storage.transition import change

QUEUE_TRIGGER = "queue"  # the trigger of the runs the nightly queue starts


async def listing(session: AsyncSession, agent_id: str, limit: int = 50) -> list[Task]:
    found = await session.execute(
        select(Task)
        .where(Task.assignee == agent_id, Task.status == TaskStatus.TODO)
        .order_by(Task.priority, Task.queue_rank, Task.created_at, Task.id)
        .limit(limit)
    )
    return list(found.scalars())


async def move_up(session: AsyncSession, agent_id: str, task_id: int) -> tasks.Outcome:
    """Put the task ahead of the one before it in the queue; a refusal says why."""
    queue = await listing(session, agent_id, limit=1000)
    ids = [t.id for t in queue]
    if task_id not in ids:
        return tasks.Outcome(
            False, await tasks.get(session, task_id), f"task #{task_id} is not in the queue"
        )
    index = ids.index(task_id)
    if index == 0:
        return tasks.Outcome(False, queue[0], f"task #{task_id} is first already")
    ahead = queue[index - 1]
    changed = await change(
        session,
        Task,
        task_id,
        {
            "priority": min(ahead.priority, queue[index].priority),
            "queue_rank": ahead.queue_rank - 1,
            "updated_at": utcnow(),
        },
        only_from=(TaskStatus.TODO,),
        where=[Task.assignee == agent_id],
    )
    return tasks.Outcome(changed.won, changed.row)


async def take_out(session: AsyncSession, task_id: int, *, actor: str) -> tasks.Outcome:
    """Out of the queue: back to the backlog (a todo task only)."""
    return await tasks.transition(
        session,
        task_id,
        TaskStatus.BACKLOG,
        actor=actor,
        note="taken out of the nightly queue",
        only_from=(TaskStatus.TODO,),
    )
