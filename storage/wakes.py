"""Wakes: a wake is a queued run row. An agent has at most one queued run (a partial unique
index): a second wake merges into it, and wakes for a task an agent keeps not changing back
off. Claiming the queued runs is storage/runs.py's job (leases)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import touch
from storage.models import Run, Task, utcnow
from storage.statuses import RunStatus
from storage.transition import change, upsert

_ROUTINE = ("schedule", "followup")
RETRY = "retry"
# Wakes no person is waiting for: claimed only once queued for the merge window, so that the
# wakes of one moment (a blocked task's notice and its escalation) make one run.
WINDOWED = ("schedule", "followup", "message", "escalation")

BACKOFF_FIRST = timedelta(minutes=2)
BACKOFF_MAX = timedelta(minutes=30)


async def wake(
    session: AsyncSession,
    agent_id: str,
    trigger: str,
    *,
    task_id: int | None = None,
    not_before: datetime | None = None,
) -> bool:
    """Queue a run for `agent_id`. If one is queued already, this wake merges into it (the
    earlier start wins, except that a retry's backoff is kept). Returns True if a new run was
    queued."""
    now = utcnow()
    start = not_before or now
    if task_id is not None:
        start = max(start, await _backoff_until(session, task_id, now))
    touch(session, "runs")
    queued_now = await upsert(
        session,
        Run,
        {
            "agent_id": agent_id,
            "task_id": task_id,
            "trigger": trigger,
            "status": RunStatus.QUEUED,
            "not_before": start,
            "queued_at": now,
        },
        keys=["agent_id"],
        # The partial unique index "one queued run per agent", spelled as literal SQL:
        # PostgreSQL infers the index only from the same predicate, not from a bound value.
        index_where=text("status = 'queued'"),
    )
    if queued_now:
        return True
    queued = (
        await session.execute(
            select(Run)
            .where(Run.agent_id == agent_id, Run.status == RunStatus.QUEUED)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if queued is not None:
        # A backoff (a failed or deferred run's retry) is never cut short by a wake merging
        # into it, or the follow-up wake queued with every retry would cancel it; otherwise
        # the earlier start wins.
        backoff = RETRY in (queued.trigger, trigger)
        await change(
            session,
            Run,
            queued.id,
            {
                "not_before": max(queued.not_before, start)
                if backoff
                else min(queued.not_before, start),
                "task_id": queued.task_id if queued.task_id is not None else task_id,
            },
            only_from=(RunStatus.QUEUED,),
        )
    return False


async def _backoff_until(session: AsyncSession, task_id: int, now: datetime) -> datetime:
    """After two runs in a row that changed nothing on a task, wakes for it wait 2 min,
    doubling up to 30 min, so a confused agent cannot loop on it and burn money."""
    idle = (
        await session.execute(select(Task.idle_runs).where(Task.id == task_id))
    ).scalar_one_or_none() or 0
    if idle < 2:
        return now
    backoff: datetime = now + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (idle - 2))
    return backoff
