"""Runs: wakes (queued runs), leases, and what each heartbeat did.

A wake is a queued run row. An agent has at most one queued run (a second wake merges into it)
and at most one running run (partial unique indexes), so one agent never runs twice at once,
whichever process claims it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Insert,
    String,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import touch
from storage.models import (
    AgentState,
    InboxMessage,
    Run,
    Task,
    TaskEvent,
    Usage,
    UTCDateTime,
    utcnow,
)

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
FINISHED = (SUCCEEDED, FAILED, SKIPPED, TIMED_OUT, CANCELLED)


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
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(Run)
        .values(
            agent_id=agent_id,
            task_id=task_id,
            trigger=trigger,
            status=QUEUED,
            not_before=start,
            queued_at=now,
        )
        .on_conflict_do_nothing(index_elements=["agent_id"], index_where=text("status = 'queued'"))
        .returning(Run.id)
    )
    touch(session, "runs")
    if (await session.execute(stmt)).scalar_one_or_none() is not None:
        return True
    queued = (
        await session.execute(
            select(Run).where(Run.agent_id == agent_id, Run.status == QUEUED).with_for_update()
        )
    ).scalar_one_or_none()
    if queued is not None:
        # A backoff (a failed or deferred run's retry) is never cut short by a wake merging
        # into it, or the follow-up wake queued with every retry would cancel it; otherwise
        # the earlier start wins.
        backoff = RETRY in (queued.trigger, trigger)
        await session.execute(
            update(Run)
            .where(Run.id == queued.id, Run.status == QUEUED)
            .values(
                not_before=max(queued.not_before, start)
                if backoff
                else min(queued.not_before, start),
                task_id=queued.task_id if queued.task_id is not None else task_id,
            )
        )
    return False


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
        .where(Run.agent_id == agent_id, Run.status.in_((SUCCEEDED, FAILED, TIMED_OUT)))
        .order_by(Run.id.desc())
        .limit(limit)
    )
    count, first, since = 0, None, None
    for run_id, status, started_at in (await session.execute(stmt)).all():
        if status == SUCCEEDED:
            break
        count, first, since = count + 1, run_id, started_at
    return Streak(count, first, since)


BACKOFF_FIRST = timedelta(minutes=2)
BACKOFF_MAX = timedelta(minutes=30)


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


_ROUTINE = ("schedule", "followup")
RETRY = "retry"
# Wakes no person is waiting for: claimed only once queued for the merge window, so that the
# wakes of one moment (a blocked task's notice and its escalation) make one run.
WINDOWED = ("schedule", "followup", "message", "escalation")


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
    running = select(Run.agent_id).where(Run.status == RUNNING)
    stmt = (
        select(Run)
        .where(
            Run.status == QUEUED,
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
        result = await session.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == QUEUED)
            .values(
                status=RUNNING,
                lease_owner=owner,
                lease_expires_at=now + lease,
                started_at=now,
            )
            .returning(Run.id)
        )
        if result.first() is not None:
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
    stmt = select(Run.not_before, Run.queued_at, Run.trigger).where(Run.status == QUEUED)
    if exclude:
        stmt = stmt.where(Run.agent_id.not_in(exclude))
    if owner is not None:
        elsewhere = select(Run.agent_id).where(Run.status == RUNNING, Run.lease_owner != owner)
        stmt = stmt.where(Run.agent_id.not_in(elsewhere))
    due = [
        max(not_before, queued_at + window) if trigger in WINDOWED else not_before
        for not_before, queued_at, trigger in (await session.execute(stmt)).all()
    ]
    return min(due, default=None)


async def renew(session: AsyncSession, run_id: int, owner: str, lease: timedelta) -> bool:
    """Extend a lease we still hold. False means the reaper took the run from us."""
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RUNNING, Run.lease_owner == owner)
        .values(lease_expires_at=utcnow() + lease)
        .returning(Run.id)
    )
    return result.first() is not None


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
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RUNNING, Run.lease_owner == owner)
        .values(
            status=status,
            outcome=outcome[:2000],
            finished_at=utcnow(),
            changed_anything=changed,
            turns=turns,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
        )
        .returning(Run.id)
    )
    return result.first() is not None


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
    where = [Run.status == RUNNING, Run.stop_requested_by.is_(None)]
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


async def record_skipped(session: AsyncSession, agent_id: str, trigger: str, outcome: str) -> None:
    """A heartbeat that had nothing to do: recorded, and no model was called."""
    now = utcnow()
    await session.execute(
        sa_insert(Run).values(
            agent_id=agent_id,
            trigger=trigger,
            status=SKIPPED,
            not_before=now,
            queued_at=now,
            started_at=now,
            finished_at=now,
            outcome=outcome,
            changed_anything=False,
            input_tokens=0,
            output_tokens=0,
            turns=0,
            cost_usd=Decimal(0),
        )
    )


def _idle_insert() -> Insert:
    """INSERT a skipped run for :agent_id at :now unless the agent is paused or has an
    active task or an unread message. Built once: building the statement costs more than
    running it."""
    agent_id = bindparam("agent_id", type_=String)
    now = bindparam("now", type_=UTCDateTime())
    busy = or_(
        select(Task.id)
        .where(Task.assignee == agent_id, Task.status.in_(("todo", "in_progress")))
        .exists(),
        select(InboxMessage.id)
        .where(InboxMessage.agent_id == agent_id, InboxMessage.read_at.is_(None))
        .exists(),
        select(AgentState.agent_id)
        .where(AgentState.agent_id == agent_id, AgentState.paused)
        .exists(),
    )
    row = {
        "agent_id": agent_id,
        "trigger": literal("schedule"),
        "status": literal(SKIPPED),
        "not_before": now,
        "queued_at": now,
        "started_at": now,
        "finished_at": now,
        "outcome": literal("nothing to do"),
        "changed_anything": literal(False),
        "input_tokens": literal(0),
        "output_tokens": literal(0),
        "turns": literal(0),
        "cost_usd": literal(0),
    }
    columns: list[Any] = list(row.values())
    return sa_insert(Run).from_select(list(row), select(*columns).where(~busy))


_IDLE_INSERT = _idle_insert()


async def record_if_idle(session: AsyncSession, agent_id: str) -> bool:
    """Record a skipped scheduled heartbeat if the agent is idle, in one statement: the
    common case of a heartbeat. False: there is something to look at (`heartbeat_state`)."""
    # On the connection: through the ORM session, parameters would mean a bulk INSERT.
    connection = await session.connection()
    result = await connection.execute(_IDLE_INSERT, {"agent_id": agent_id, "now": utcnow()})
    return bool(result.rowcount)


@dataclass(frozen=True)
class HeartbeatState:
    paused: bool
    task_id: int | None  # the task a run would work on
    unread: bool


async def heartbeat_state(session: AsyncSession, agent_id: str) -> HeartbeatState:
    """What a scheduled heartbeat needs to decide, in one query (it runs for every agent on
    every tick, so it must be cheap)."""
    paused = select(AgentState.paused).where(AgentState.agent_id == agent_id).scalar_subquery()
    task = (
        select(Task.id)
        .where(Task.assignee == agent_id, Task.status.in_(("todo", "in_progress")))
        .order_by(Task.priority, Task.id)
        .limit(1)
        .scalar_subquery()
    )
    unread = (
        select(InboxMessage.id)
        .where(InboxMessage.agent_id == agent_id, InboxMessage.read_at.is_(None))
        .exists()
    )
    row = (await session.execute(select(paused, task, unread))).one()
    return HeartbeatState(bool(row[0]), row[1], bool(row[2]))


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
        .where(Run.status == RUNNING, Run.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    )
    reaped: list[Reaped] = []
    for run in (await session.execute(stmt)).scalars().all():
        result = await session.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == RUNNING, Run.lease_expires_at < now)
            .values(status=TIMED_OUT, finished_at=now, outcome="lease expired: the run died")
            .returning(Run.id)
        )
        if result.first() is None:
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
    if task is None or task.status != "in_progress":
        return False
    exhausted = task.retries + 1 > task.max_retries
    to = "blocked" if exhausted else "todo"
    reason = (
        f"run {run_id} {what}; {task.retries + 1} failed runs, "
        f"giving up after {task.max_retries} retries"
        if exhausted
        else f"run {run_id} {what}; retry {task.retries + 1} of {task.max_retries}"
    )
    result = await session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == "in_progress")
        .values(
            status=to,
            retries=Task.retries + 1,
            blocked_reason=reason if exhausted else None,
            updated_at=utcnow(),
        )
        .returning(Task.id)
    )
    if result.first() is None:
        return False
    session.add(
        TaskEvent(
            task_id=task_id,
            kind="status",
            actor="system:reaper",
            from_status="in_progress",
            to_status=to,
            body=reason,
        )
    )
    return exhausted


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
    stmt = select(Run).where(Run.agent_id == agent_id, Run.status == RUNNING)
    return (await session.execute(stmt)).scalar_one_or_none()


async def has_queued(session: AsyncSession, agent_id: str) -> bool:
    stmt = select(Run.id).where(Run.agent_id == agent_id, Run.status == QUEUED)
    return (await session.execute(stmt)).first() is not None


PRUNE_BATCH = 5000  # idle runs deleted per transaction


async def prune_idle(session: AsyncSession, before: datetime, limit: int = PRUNE_BATCH) -> int:
    """Delete up to `limit` idle heartbeats (skipped, no task, no model call) that finished
    before `before`; returns how many. They are the bulk of the runs table (one per agent per
    tick) and say nothing once the watchdog's window has passed. Runs that touched a task or a
    model stay: they are the record of work and spend."""
    idle = (
        select(Run.id)
        .where(
            Run.status == SKIPPED,
            Run.task_id.is_(None),
            Run.turns == 0,
            Run.finished_at < before,
            ~select(Usage.id).where(Usage.run_id == Run.id).exists(),
        )
        .limit(limit)
    )
    result = await session.execute(delete(Run).where(Run.id.in_(idle)))
    return int(result.rowcount)  # type: ignore[attr-defined]
