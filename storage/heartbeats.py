"""Heartbeats with nothing to do: recorded as skipped runs in one cheap statement, and pruned
once the watchdog no longer reads them (they are most of the runs table)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Insert, String, bindparam, delete, literal, or_, select
from sqlalchemy import insert as sa_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AgentState, InboxMessage, Run, Task, Usage, UTCDateTime, utcnow
from storage.statuses import RunStatus
from storage.task_queries import ACTIVE
from storage.transition import affected


async def record_skipped(session: AsyncSession, agent_id: str, trigger: str, outcome: str) -> None:
    """A heartbeat that had nothing to do: recorded, and no model was called."""
    now = utcnow()
    await session.execute(
        sa_insert(Run).values(
            agent_id=agent_id,
            trigger=trigger,
            status=RunStatus.SKIPPED,
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
        select(Task.id).where(Task.assignee == agent_id, Task.status.in_(ACTIVE)).exists(),
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
        "status": literal(RunStatus.SKIPPED.value),
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
        .where(Task.assignee == agent_id, Task.status.in_(ACTIVE))
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


PRUNE_BATCH = 5000  # idle runs deleted per transaction


async def prune_idle(session: AsyncSession, before: datetime, limit: int = PRUNE_BATCH) -> int:
    """Delete up to `limit` idle heartbeats (skipped, no task, no model call) that finished
    before `before`; returns how many. They are the bulk of the runs table (one per agent per
    tick) and say nothing once the watchdog's window has passed. Runs that touched a task or a
    model stay: they are the record of work and spend."""
    idle = (
        select(Run.id)
        .where(
            Run.status == RunStatus.SKIPPED,
            Run.task_id.is_(None),
            Run.turns == 0,
            Run.finished_at < before,
            ~select(Usage.id).where(Usage.run_id == Run.id).exists(),
        )
        .limit(limit)
    )
    result = await session.execute(delete(Run).where(Run.id.in_(idle)))
    return affected(result)
