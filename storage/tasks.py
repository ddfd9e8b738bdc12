"""Tasks: the lifecycle of docs/design.md, enforced in one transition function.

Every change is a conditional UPDATE (`storage.transition.change`) whose winner writes the
event row (and any wake or outbox row) in the caller's transaction. Functions return what
happened; they never raise for a lost race. What reads tasks without changing them lives in
storage/task_queries.py (re-exported here).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import inbox, outbox, runs
from storage.models import Task, TaskEvent, is_row_id, utcnow
from storage.statuses import PRIORITIES as PRIORITIES
from storage.statuses import TaskStatus
from storage.task_queries import ACTIVE as ACTIVE
from storage.task_queries import OPEN as OPEN
from storage.task_queries import active_counts as active_counts
from storage.task_queries import events as events
from storage.task_queries import listing as listing
from storage.task_queries import news as news
from storage.task_queries import next_for as next_for
from storage.transition import Changed, change

STATUSES = tuple(TaskStatus)

# to-status -> the statuses it may be reached from
_FROM: dict[str, tuple[TaskStatus, ...]] = {
    TaskStatus.BACKLOG: (TaskStatus.TODO,),
    TaskStatus.TODO: (
        TaskStatus.BACKLOG,
        TaskStatus.IN_PROGRESS,
        TaskStatus.IN_REVIEW,
        TaskStatus.BLOCKED,
    ),
    TaskStatus.IN_PROGRESS: (TaskStatus.TODO, TaskStatus.IN_REVIEW),
    TaskStatus.IN_REVIEW: (TaskStatus.IN_PROGRESS,),
    TaskStatus.DONE: (TaskStatus.IN_PROGRESS, TaskStatus.IN_REVIEW),
    TaskStatus.BLOCKED: (
        TaskStatus.BACKLOG,
        TaskStatus.TODO,
        TaskStatus.IN_PROGRESS,
        TaskStatus.IN_REVIEW,
    ),
    TaskStatus.CANCELLED: OPEN,
}


@dataclass(frozen=True)
class Outcome(Changed[Task]):
    """A task change (see `Changed`), with why it was refused for the person who asked."""

    reason: str = ""

    @property
    def task(self) -> Task | None:
        return self.row


def allowed_from(status: str) -> tuple[str, ...]:
    return _FROM.get(status, ())


async def get(session: AsyncSession, task_id: int) -> Task | None:
    if not is_row_id(task_id):
        return None
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
    status: str = TaskStatus.TODO,
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
    if status == TaskStatus.TODO:
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
    if to == TaskStatus.BLOCKED and not note.strip():
        return Outcome(False, await get(session, task_id), "blocking needs a reason")
    task = await get(session, task_id)
    if task is None:
        return Outcome(False, None, f"there is no task #{task_id}")
    previous = task.status
    if only_from is not None and previous not in only_from:
        return Outcome(False, task, f"task #{task_id} is {previous}, not {' or '.join(only_from)}")
    if previous not in _FROM[to]:
        return Outcome(False, task, _refusal(task, to))
    values: dict[str, object] = {"status": TaskStatus(to), "updated_at": utcnow()}
    if to == TaskStatus.BLOCKED:
        values["blocked_reason"] = note
    elif to == TaskStatus.TODO:
        values["blocked_reason"] = None

    async def consequences(task: Task) -> None:
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
        if to in _TOLD and task.creator.startswith("person:"):
            await _tell_creator(session, task, previous, to, actor, note)
        if to == TaskStatus.BLOCKED and manager is not None:
            await inbox.send(
                session,
                manager,
                kind="escalation",
                source=actor,
                task_id=task_id,
                body=f"task #{task_id} ({task.title}) assigned to {task.assignee} is blocked: "
                f"{note}",
            )
        if to == TaskStatus.TODO and previous in _REOPENED_FROM:
            await runs.wake(session, task.assignee, "assignment", task_id=task_id)
        if to == TaskStatus.CANCELLED:
            # A run in flight on it stops now: no model call or tool call after the cancel.
            await runs.request_stop(session, by=actor, task_id=task_id)

    # Only from the status read above: another writer changed it since, and loses nothing.
    changed = await change(
        session, Task, task_id, values, only_from=(previous,), then=consequences
    )
    if not changed.won:
        assert changed.row is not None  # tasks are never deleted
        return Outcome(False, changed.row, _refusal(changed.row, to))
    return Outcome(True, changed.row)


_TOLD = (TaskStatus.DONE, TaskStatus.IN_REVIEW, TaskStatus.BLOCKED)  # the creator hears these
_REOPENED_FROM = (TaskStatus.BLOCKED, TaskStatus.BACKLOG, TaskStatus.IN_REVIEW)


async def accept(session: AsyncSession, task_id: int, *, actor: str) -> Outcome:
    """A person accepts a task in review: done, with the evidence the agent gave kept in the
    history. The agent is told (read at its next run; no run just for this)."""
    outcome = await transition(
        session,
        task_id,
        TaskStatus.DONE,
        actor=actor,
        note="accepted",
        only_from=(TaskStatus.IN_REVIEW,),
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
        session,
        task_id,
        TaskStatus.IN_PROGRESS,
        actor=actor,
        note="sent back",
        only_from=(TaskStatus.IN_REVIEW,),
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
    headline = {
        TaskStatus.DONE: "✅ done",
        TaskStatus.IN_REVIEW: "👀 ready for review",
        TaskStatus.BLOCKED: "⛔ blocked",
    }[TaskStatus(to)]
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
    if wake and actor != f"agent:{task.assignee}" and task.status in _HEARS_COMMENTS:
        await runs.wake(session, task.assignee, "comment", task_id=task_id)
    return Outcome(True, task)


_HEARS_COMMENTS = (*ACTIVE, TaskStatus.IN_REVIEW, TaskStatus.BLOCKED)


async def reassign(session: AsyncSession, task_id: int, assignee: str, *, actor: str) -> Outcome:
    """Give an open task to another agent and wake that agent."""
    current = await get(session, task_id)
    if current is None:
        return Outcome(False, None, f"there is no task #{task_id}")
    if current.assignee == assignee:
        return Outcome(False, current, f"task #{task_id} is already assigned to {assignee}")

    async def consequences(task: Task) -> None:
        session.add(TaskEvent(task_id=task_id, kind="assigned", actor=actor, body=assignee))
        if task.status in ACTIVE:
            await runs.wake(session, assignee, "assignment", task_id=task_id)

    changed = await change(
        session,
        Task,
        task_id,
        {"assignee": assignee, "idle_runs": 0, "updated_at": utcnow()},
        only_from=OPEN,
        then=consequences,
    )
    task = changed.row
    if task is None:
        return Outcome(False, None, f"there is no task #{task_id}")
    if not changed.won:
        return Outcome(False, task, f"task #{task_id} is {task.status}; it cannot be reassigned")
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
