"""Agent state: pause and resume (conditional updates), and what /agents and /agent show.

The config says what an agent is; the `agent_state` row says what the database knows beyond
that. A missing row means "never paused". Pausing stops the run in flight (a stop request,
see storage.runs.request_stop), and the run worker skips queued runs of a paused agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import inbox, runs, tasks
from storage.models import AgentState, Run, Task, utcnow
from storage.statuses import RunStatus
from storage.transition import Changed, change, upsert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change(Changed[AgentState]):
    """A pause or resume (see `Changed`; no row: the agent was never paused), and what it
    did besides."""

    woken: bool = False
    stopped: bool = False  # a pause stopped the run in flight

    @property
    def state(self) -> AgentState | None:
        return self.row


async def state(session: AsyncSession, agent_id: str) -> AgentState | None:
    return await session.get(AgentState, agent_id, populate_existing=True)


async def pause(session: AsyncSession, agent_id: str, *, by: str, reason: str = "") -> Change:
    """Pause an agent. Refused (won=False) if it is paused already; the state then says since
    when and by whom."""
    await _ensure_row(session, agent_id)
    changed = await change(
        session,
        AgentState,
        agent_id,
        {"paused": True, "paused_reason": reason or None, "paused_by": by, "updated_at": utcnow()},
        where=[AgentState.paused.is_(False)],
    )
    if changed.won:
        log.info("agent %s paused by %s: %s", agent_id, by, reason or "no reason given")
        # The run in flight stops too, as /stop would.
        stopped = bool(await runs.request_stop(session, by=by, agent_id=agent_id))
        return Change(True, changed.row, stopped=stopped)
    return Change(False, changed.row)


async def resume(session: AsyncSession, agent_id: str, *, by: str) -> Change:
    """Resume a paused agent. Wakes it if it has active tasks or unread messages: wakes that
    came while it was paused were skipped, and an agent without a schedule would wait forever.
    Refused (won=False) if it was not paused."""
    changed = await change(
        session,
        AgentState,
        agent_id,
        {"paused": False, "paused_reason": None, "paused_by": None, "updated_at": utcnow()},
        where=[AgentState.paused.is_(True)],
    )
    woken = False
    if changed.won:
        log.info("agent %s resumed by %s", agent_id, by)
        if await has_work(session, agent_id):
            await runs.wake(session, agent_id, "manual")
            woken = True
    return Change(changed.won, changed.row, woken)


async def is_paused(session: AsyncSession, agent_id: str) -> bool:
    stmt = select(AgentState.paused).where(AgentState.agent_id == agent_id)
    return bool((await session.execute(stmt)).scalar_one_or_none())


async def _ensure_row(session: AsyncSession, agent_id: str) -> None:
    await upsert(
        session,
        AgentState,
        {"agent_id": agent_id, "paused": False, "updated_at": utcnow()},
        keys=["agent_id"],
    )


async def has_work(session: AsyncSession, agent_id: str) -> bool:
    """Active tasks or unread inbox messages: what a run would work on."""
    counts = await tasks.active_counts(session, [agent_id])
    return bool(counts.get(agent_id)) or await inbox.has_unread(session, agent_id)


@dataclass(frozen=True)
class Overview:
    """One agent as /agents shows it."""

    paused: bool
    running: Run | None
    last: Run | None  # the last finished run
    open_tasks: int


async def overview(session: AsyncSession, agent_ids: list[str]) -> dict[str, Overview]:
    """Pause flag, running run, last finished run and open task count of each agent."""
    if not agent_ids:
        return {}
    paused = set(
        (
            await session.execute(
                select(AgentState.agent_id).where(
                    AgentState.agent_id.in_(agent_ids), AgentState.paused.is_(True)
                )
            )
        ).scalars()
    )
    running = {
        run.agent_id: run
        for run in (
            await session.execute(
                select(Run).where(Run.agent_id.in_(agent_ids), Run.status == RunStatus.RUNNING)
            )
        ).scalars()
    }
    last_ids = (
        select(func.max(Run.id))
        .where(Run.agent_id.in_(agent_ids), Run.status.in_(runs.FINISHED))
        .group_by(Run.agent_id)
    )
    last = {
        run.agent_id: run
        for run in (await session.execute(select(Run).where(Run.id.in_(last_ids)))).scalars()
    }
    counts = {
        agent: n
        for agent, n in (
            await session.execute(
                select(Task.assignee, func.count())
                .where(Task.assignee.in_(agent_ids), Task.status.in_(tasks.OPEN))
                .group_by(Task.assignee)
            )
        ).all()
    }
    return {
        agent: Overview(
            paused=agent in paused,
            running=running.get(agent),
            last=last.get(agent),
            open_tasks=counts.get(agent, 0),
        )
        for agent in agent_ids
    }
