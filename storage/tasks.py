"""Tasks: the lifecycle of docs/design.md, enforced in one transition function.

Every change is a conditional UPDATE plus an event row (and any wake or outbox row) in the
caller's transaction. Functions return what happened; they never raise for a lost race.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import inbox, outbox, runs
from storage.models import Task, TaskEvent, utcnow
from storage.statuses import PRIORITIES as PRIORITIES

BACKLOG = "backlog"
TODO = "todo"
IN_PROGRESS = "in_progress"
IN_REVIEW = "in_review"
DONE = "done"
BLOCKED = "blocked"
CANCELLED = "cancelled"

STATUSES = (BACKLOG, TODO, IN_PROGRESS, IN_REVIEW, DONE, BLOCKED, CANCELLED)
OPEN = (BACKLOG, TODO, IN_PROGRESS, IN_REVIEW, BLOCKED)
ACTIVE = (TODO, IN_PROGRESS)  # what a heartbeat works on

# to-status -> the statuses it may be reached from
_FROM: dict[str, tuple[str, ...]] = {
    BACKLOG: (TODO,),
    TODO: (BACKLOG, IN_PROGRESS, IN_REVIEW, BLOCKED),
    IN_PROGRESS: (TODO, IN_REVIEW),
    IN_REVIEW: (IN_PROGRESS,),
    DONE: (IN_PROGRESS, IN_REVIEW),
    BLOCKED: (BACKLOG, TODO, IN_PROGRESS, IN_REVIEW),
    CANCELLED: OPEN,
}


@dataclass(frozen=True)
class Outcome:
    """Whether a change won, and the task as it is now (None if it does not exist)."""

    won: bool
    task: Task | None
    reason: str = ""


def allowed_from(status: str) -> tuple[str, ...]:
    return _FROM.get(status, ())


async def get(session: AsyncSession, task_id: int) -> Task | None:
    return await session.get(Task, task_id, populate_existing=True)


async def create(
    session: AsyncSession,
    *,
    title: str,
    assignee: str,
    creator: str,
    body: str = "",
    parent_id: int | None = None,
    max_retries: int,
    priority: int = PRIORITIES["normal"],
    idempotency_key: str | None = None,
    status: str = TODO,
) -> Task:
    """Create a task and wake its assignee now (not at its next scheduled heartbeat).

    With an `idempotency_key` already used, returns the existing task and changes nothing.
    """
    if idempotency_key is not None:
        existing = (
            await session.execute(select(Task).where(Task.idempotency_key == idempotency_key))
        ).scalar_one_or_none()
        if existing is not None:
            return existing
    task = Task(
        title=title[:200],
        body=body,
        assignee=assignee,
        creator=creator,
        parent_id=parent_id,
        priority=priority,
        status=status,
        max_retries=max_retries,
        idempotency_key=idempotency_key,
    )
    session.add(task)
    await session.flush()
    session.add(
        TaskEvent(task_id=task.id, kind="created", actor=creator, to_status=status, body=title)
    )
    if status == TODO:
        await runs.wake(session, assignee, "assignment", task_id=task.id)
    return task


async def transition(
    session: AsyncSession,
    task_id: int,
    to: str,
    *,
    actor: str,
    note: str = "",
    manager: str | None = None,
    only_from: tuple[str, ...] | None = None,
) -> Outcome:
    """Move a task to `to` if its current status allows it (and is in `only_from`, when
    given: an Unblock button moves only a blocked task, though todo has other ways in).

    Blocking needs a `note` (the reason) and wakes `manager` with it. Unblocking (to todo)
    and reopening wake the assignee. A refused change names the current status.
    """
    if to not in _FROM:
        return Outcome(False, await get(session, task_id), f'"{to}" is not a task status')
    if to == BLOCKED and not note.strip():
        return Outcome(False, await get(session, task_id), "blocking needs a reason")
    task = await get(session, task_id)
    if task is None:
        return Outcome(False, None, f"there is no task #{task_id}")
    previous = task.status
    if only_from is not None and previous not in only_from:
        return Outcome(False, task, f"task #{task_id} is {previous}, not {' or '.join(only_from)}")
    if previous not in _FROM[to]:
        return Outcome(False, task, _refusal(task, to))
    values: dict[str, object] = {"status": to, "updated_at": utcnow()}
    if to == BLOCKED:
        values["blocked_reason"] = note
    elif to == TODO:
        values["blocked_reason"] = None
    result = await session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == previous)
        .values(**values)
        .returning(Task.id)
    )
    if result.first() is None:  # another writer changed it since we read it
        task = await get(session, task_id)
        assert task is not None
        return Outcome(False, task, _refusal(task, to))
    task = await get(session, task_id)
    assert task is not None
    session.add(
        TaskEvent(
            task_id=task_id,
            kind="status",
            actor=actor,
            from_status=previous,
            to_status=to,
            body=note,
        )
    )
    if to in (DONE, IN_REVIEW, BLOCKED) and task.creator.startswith("person:"):
        await _tell_creator(session, task, previous, to, actor, note)
    if to == BLOCKED and manager is not None:
        await inbox.send(
            session,
            manager,
            kind="escalation",
            source=actor,
            task_id=task_id,
            body=f"task #{task_id} ({task.title}) assigned to {task.assignee} is blocked: {note}",
        )
    if to == TODO and previous in (BLOCKED, BACKLOG, IN_REVIEW):
        await runs.wake(session, task.assignee, "assignment", task_id=task_id)
    if to == CANCELLED:
        # A run in flight on it stops now: no model call or tool call after the cancel.
        await runs.request_stop(session, by=actor, task_id=task_id)
    return Outcome(True, task)


async def accept(session: AsyncSession, task_id: int, *, actor: str) -> Outcome:
    """A person accepts a task in review: done, with the evidence the agent gave kept in the
    history. The agent is told (read at its next run; no run just for this)."""
    outcome = await transition(
        session, task_id, DONE, actor=actor, note="accepted", only_from=(IN_REVIEW,)
    )
    if outcome.won and outcome.task is not None:
        await inbox.send(
            session,
            outcome.task.assignee,
            kind="message",
            source=actor,
            task_id=task_id,
            body=f"task #{task_id} ({outcome.task.title}) was accepted: it is done",
            wake=False,
        )
    return outcome


async def send_back(session: AsyncSession, task_id: int, *, actor: str, reason: str) -> Outcome:
    """A person sends a task in review back to its agent: in_progress again, the reason a
    comment, and the agent woken to read it."""
    if not reason.strip():
        return Outcome(False, await get(session, task_id), "sending back needs a reason")
    outcome = await transition(
        session, task_id, IN_PROGRESS, actor=actor, note="sent back", only_from=(IN_REVIEW,)
    )
    if outcome.won:
        await comment(session, task_id, actor=actor, body=f"Sent back: {reason.strip()}")
    return outcome


async def _tell_creator(
    session: AsyncSession, task: Task, previous: str, to: str, actor: str, note: str
) -> None:
    """The person who asked for the work hears how it ended, in their private chat."""
    person = task.creator.removeprefix("person:")
    if not person.isdigit():
        return
    headline = {DONE: "✅ done", IN_REVIEW: "👀 ready for review", BLOCKED: "⛔ blocked"}[to]
    who = actor.removeprefix("agent:").removeprefix("person:")
    text = f"Task #{task.id} {html.escape(task.title)}: {headline} ({html.escape(who)})"
    if note:
        text += f"\n{html.escape(note[:1500])}"
    await outbox.enqueue(
        session,
        outbox.Destination(int(person)),
        text,
        dedup_key=f"task-status:{task.id}:{previous}:{to}:{task.updated_at.timestamp()}",
    )


def _refusal(task: Task, to: str) -> str:
    if task.status == to:
        return f"task #{task.id} is already {to}"
    return f"task #{task.id} is {task.status}; it cannot become {to}"


async def comment(
    session: AsyncSession, task_id: int, *, actor: str, body: str, wake: bool = True
) -> Outcome:
    """Add a comment. The assignee is woken, unless the comment is its own (or `wake` is
    False: it reads the comment at its next run on the task)."""
    task = await get(session, task_id)
    if task is None:
        return Outcome(False, None, f"there is no task #{task_id}")
    session.add(TaskEvent(task_id=task_id, kind="comment", actor=actor, body=body))
    task.updated_at = utcnow()
    if wake and actor != f"agent:{task.assignee}" and task.status in (*ACTIVE, IN_REVIEW, BLOCKED):
        await runs.wake(session, task.assignee, "comment", task_id=task_id)
    return Outcome(True, task)


async def reassign(session: AsyncSession, task_id: int, assignee: str, *, actor: str) -> Outcome:
    """Give an open task to another agent and wake that agent."""
    current = await get(session, task_id)
    if current is not None and current.assignee == assignee:
        return Outcome(False, current, f"task #{task_id} is already assigned to {assignee}")
    result = await session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status.in_(OPEN))
        .values(assignee=assignee, idle_runs=0, updated_at=utcnow())
        .returning(Task.id)
    )
    task = await get(session, task_id)
    if result.first() is None:
        if task is None:
            return Outcome(False, None, f"there is no task #{task_id}")
        return Outcome(False, task, f"task #{task_id} is {task.status}; it cannot be reassigned")
    assert task is not None
    session.add(TaskEvent(task_id=task_id, kind="assigned", actor=actor, body=assignee))
    if task.status in ACTIVE:
        await runs.wake(session, assignee, "assignment", task_id=task_id)
    return Outcome(True, task)


async def note_run(session: AsyncSession, task_id: int, *, changed: bool) -> int:
    """Record whether a run on the task changed anything; returns consecutive idle runs."""
    values = {"idle_runs": 0} if changed else {"idle_runs": Task.idle_runs + 1}
    result = await session.execute(
        update(Task).where(Task.id == task_id).values(**values).returning(Task.idle_runs)
    )
    return result.scalar_one_or_none() or 0


async def record_refusal(session: AsyncSession, task_id: int, *, actor: str, body: str) -> None:
    """A tool call that was refused (authority, org chart, schema): kept for the record."""
    session.add(TaskEvent(task_id=task_id, kind="refused", actor=actor, body=body))


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
        task = await get(session, task_id)
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
