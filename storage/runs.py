"""Runs: leases (claim, renew, finish, stop, reap) and what each run did.

A wake is a queued run row (storage/wakes.py). An agent has at most one queued run and at most
one running run (partial unique indexes), so one agent never runs twice at once, whichever
process claims it. Idle heartbeats are storage/heartbeats.py. Both are re-exported here, so
`runs.wake` and `runs.record_if_idle` keep working.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import touch
from storage.heartbeats import PRUNE_BATCH as PRUNE_BATCH
from storage.heartbeats import HeartbeatState as HeartbeatState
from storage.heartbeats import heartbeat_state as heartbeat_state
from storage.heartbeats import prune_idle as prune_idle
from storage.heartbeats import record_if_idle as record_if_idle
from storage.heartbeats import record_skipped as record_skipped
from storage.models import Run, Task, TaskEvent, utcnow
from storage.statuses import RunStatus, TaskStatus
from storage.transition import change
from storage.wakes import _ROUTINE, WINDOWED
from storage.wakes import BACKOFF_FIRST as BACKOFF_FIRST
from storage.wakes import BACKOFF_MAX as BACKOFF_MAX
from storage.wakes import RETRY as RETRY
from storage.wakes import wake as wake

FINISHED = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.SKIPPED,
    RunStatus.TIMED_OUT,
    RunStatus.CANCELLED,
)


@dataclass(frozen=True)
class Streak:
    """The agent's failed runs in a row, up to now (the newest finished run included)."""

    count: int
    first_run_id: int | None  # the first failed run of the streak
    since: datetime | None


async def failure_streak(session: AsyncSession, agent_id: str, limit: int = 200) -> Streak:
    """Failed runs of `agent_id` since its last run that succeeded (skipped runs, which
    called no model or were deferred, neither count nor break the streak)."""
    stmt = (
        select(Run.id, Run.status, Run.started_at)
        .where(
            Run.agent_id == agent_id,
            Run.status.in_((RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT)),
        )
        .order_by(Run.id.desc())
        .limit(limit)
    )
    count, first, since = 0, None, None
    for run_id, status, started_at in (await session.execute(stmt)).all():
        if status == RunStatus.SUCCEEDED:
            break
        count, first, since = count + 1, run_id, started_at
    return Streak(count, first, since)


@dataclass(frozen=True)
class Claimed:
    run_id: int
    agent_id: str
    task_id: int | None
    trigger: str


async def claim_due(
    session: AsyncSession,
    owner: str,
    lease: timedelta,
    *,
    exclude: set[str],
    limit: int,
    window: timedelta = timedelta(0),
) -> list[Claimed]:
    """Take due queued runs of agents that are not running now and not in `exclude` (the
    agents running in this process, and those this node may not run: their `runs_on` names
    other nodes); a `WINDOWED` wake is due once it has been queued for `window`. Call inside
    `Database.claim()` so SQLite holds the write lock and PostgreSQL claimers skip each
    other's rows (on any number of nodes: the unique index on running runs per agent keeps
    one run of an agent at a time fleet-wide)."""
    now = utcnow()
    running = select(Run.agent_id).where(Run.status == RunStatus.RUNNING)
    stmt = (
        select(Run)
        .where(
            Run.status == RunStatus.QUEUED,
            Run.not_before <= now,
            or_(Run.trigger.not_in(WINDOWED), Run.queued_at <= now - window),
            Run.agent_id.not_in(running),
            Run.agent_id.not_in(exclude or {""}),
        )
        # Work a person or another agent is waiting for goes before routine heartbeats.
        .order_by(case((Run.trigger.in_(_ROUTINE), 1), else_=0), Run.not_before, Run.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed: list[Claimed] = []
    for run in (await session.execute(stmt)).scalars().all():
        taken = await change(
            session,
            Run,
            run.id,
            {
                "status": RunStatus.RUNNING,
                "lease_owner": owner,
                "lease_expires_at": now + lease,
                "started_at": now,
            },
            only_from=(RunStatus.QUEUED,),
        )
        if taken.won:
            claimed.append(Claimed(run.id, run.agent_id, run.task_id, run.trigger))
    return claimed


async def next_due_at(
    session: AsyncSession,
    window: timedelta = timedelta(0),
    *,
    exclude: Collection[str] = (),
    owner: str | None = None,
) -> datetime | None:
    """When the next queued run is due (see `claim_due`); one row per queued agent. With
    `owner`, runs of agents running under another owner (another node) are left out, as are
    the agents in `exclude` (those this node may not run): the worker would only wake for
    runs it cannot claim."""
    stmt = select(Run.not_before, Run.queued_at, Run.trigger).where(Run.status == RunStatus.QUEUED)
    if exclude:
        stmt = stmt.where(Run.agent_id.not_in(exclude))
    if owner is not None:
        elsewhere = select(Run.agent_id).where(
            Run.status == RunStatus.RUNNING, Run.lease_owner != owner
        )
        stmt = stmt.where(Run.agent_id.not_in(elsewhere))
    due = [
        max(not_before, queued_at + window) if trigger in WINDOWED else not_before
        for not_before, queued_at, trigger in (await session.execute(stmt)).all()
    ]
    return min(due, default=None)


async def renew(session: AsyncSession, run_id: int, owner: str, lease: timedelta) -> bool:
    """Extend a lease we still hold. False means the reaper took the run from us."""
    renewed = await change(
        session,
        Run,
        run_id,
        {"lease_expires_at": utcnow() + lease},
        only_from=(RunStatus.RUNNING,),
        where=[Run.lease_owner == owner],
    )
    return renewed.won


async def set_task(session: AsyncSession, run_id: int, task_id: int) -> None:
    await session.execute(update(Run).where(Run.id == run_id).values(task_id=task_id))


async def finish(
    session: AsyncSession,
    run_id: int,
    owner: str,
    status: str,
    outcome: str,
    *,
    changed: bool | None = None,
    turns: int = 0,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd: Decimal = Decimal(0),
) -> bool:
    """Close a run we hold. False if it was no longer ours (reaped after lease expiry)."""
    finished = await change(
        session,
        Run,
        run_id,
        {
            "status": RunStatus(status),
            "outcome": outcome[:2000],
            "finished_at": utcnow(),
            "changed_anything": changed,
            "turns": turns,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost_usd,
        },
        only_from=(RunStatus.RUNNING,),
        where=[Run.lease_owner == owner],
    )
    return finished.won


@dataclass(frozen=True)
class StopRequest:
    run_id: int
    agent_id: str
    task_id: int | None


async def request_stop(
    session: AsyncSession,
    *,
    by: str,
    agent_id: str | None = None,
    task_id: int | None = None,
    run_id: int | None = None,
) -> list[StopRequest]:
    """Ask the process running them to stop the runs in flight of an agent, on a task, or one
    run: the model call is abandoned and no tool call runs after it (see agents.runtime).
    The first request wins (its `by` is the run's "stopped by"); returns the runs newly asked
    to stop. Every process is told through the `runs-stop` commit topic (its own) or finds the
    request in the row (another process)."""
    where = [Run.status == RunStatus.RUNNING, Run.stop_requested_by.is_(None)]
    if agent_id is not None:
        where.append(Run.agent_id == agent_id)
    if task_id is not None:
        where.append(Run.task_id == task_id)
    if run_id is not None:
        where.append(Run.id == run_id)
    result = await session.execute(
        update(Run)
        .where(*where)
        .values(stop_requested_by=by, stop_requested_at=utcnow())
        .returning(Run.id, Run.agent_id, Run.task_id)
    )
    stopped = [StopRequest(row[0], row[1], row[2]) for row in result.all()]
    if stopped:
        touch(session, "runs-stop")
    return stopped


async def stops_requested(session: AsyncSession, run_ids: list[int]) -> dict[int, str]:
    """Of these runs, those a person asked to stop: run id -> who."""
    if not run_ids:
        return {}
    found = await session.execute(
        select(Run.id, Run.stop_requested_by).where(
            Run.id.in_(run_ids), Run.stop_requested_by.is_not(None)
        )
    )
    return {row[0]: str(row[1]) for row in found.all()}


@dataclass(frozen=True)
class Reaped:
    run_id: int
    agent_id: str
    task_id: int | None
    task_blocked: bool


async def reap_expired(session: AsyncSession, now: datetime | None = None) -> list[Reaped]:
    """Runs whose lease expired (their process died): mark them timed out and put their task
    back to todo, counting a retry; past max_retries the task is blocked instead. The caller
    wakes the assignee or the manager."""
    now = now or utcnow()
    stmt = (
        select(Run)
        .where(Run.status == RunStatus.RUNNING, Run.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    )
    reaped: list[Reaped] = []
    for run in (await session.execute(stmt)).scalars().all():
        timed_out = await change(
            session,
            Run,
            run.id,
            {
                "status": RunStatus.TIMED_OUT,
                "finished_at": now,
                "outcome": "lease expired: the run died",
            },
            only_from=(RunStatus.RUNNING,),
            where=[Run.lease_expires_at < now],
        )
        if not timed_out.won:
            continue
        blocked = False
        if run.task_id is not None:
            blocked = await return_task(session, run.task_id, run.id, "died (lease expired)")
        reaped.append(Reaped(run.id, run.agent_id, run.task_id, blocked))
    return reaped


async def return_task(session: AsyncSession, task_id: int, run_id: int, what: str) -> bool:
    """A run on the task died or failed: back to todo, counting a retry, or blocked once the
    retries are used up (returns True then; the caller escalates)."""
    task = await session.get(Task, task_id, populate_existing=True)
    if task is None or task.status != TaskStatus.IN_PROGRESS:
        return False
    exhausted = task.retries + 1 > task.max_retries
    to = TaskStatus.BLOCKED if exhausted else TaskStatus.TODO
    reason = (
        f"run {run_id} {what}; {task.retries + 1} failed runs, "
        f"giving up after {task.max_retries} retries"
        if exhausted
        else f"run {run_id} {what}; retry {task.retries + 1} of {task.max_retries}"
    )
    # Not storage.tasks.transition (which imports this module): a dead run's task needs no
    # wake or notice here, the caller escalates.
    returned = await change(
        session,
        Task,
        task_id,
        {
            "status": to,
            "retries": Task.retries + 1,
            "blocked_reason": reason if exhausted else None,
            "updated_at": utcnow(),
        },
        only_from=(TaskStatus.IN_PROGRESS,),
        then=lambda _: [
            TaskEvent(
                task_id=task_id,
                kind="status",
                actor="system:reaper",
                from_status=TaskStatus.IN_PROGRESS,
                to_status=to,
                body=reason,
            )
        ],
    )
    return returned.won and exhausted


async def last_seen(
    session: AsyncSession, agent_id: str, task_id: int, *, before: int
) -> datetime | None:
    """When the agent's last run on the task (before run `before`) that reached a model
    started: what happened on the task since is news to it."""
    stmt = select(func.max(Run.started_at)).where(
        Run.agent_id == agent_id, Run.task_id == task_id, Run.turns > 0, Run.id < before
    )
    value: datetime | None = (await session.execute(stmt)).scalar_one_or_none()
    return value


async def recent(session: AsyncSession, agent_id: str, limit: int = 5) -> list[Run]:
    stmt = select(Run).where(Run.agent_id == agent_id).order_by(Run.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def current(session: AsyncSession, agent_id: str) -> Run | None:
    stmt = select(Run).where(Run.agent_id == agent_id, Run.status == RunStatus.RUNNING)
    return (await session.execute(stmt)).scalar_one_or_none()


async def has_queued(session: AsyncSession, agent_id: str) -> bool:
    stmt = select(Run.id).where(Run.agent_id == agent_id, Run.status == RunStatus.QUEUED)
    return (await session.execute(stmt)).first() is not None
