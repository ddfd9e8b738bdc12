"""The nightly coding queue of an agent with `queue = { cron, max_tasks }`: at the cron time it
starts a run on its most urgent `todo` task (storage.queue's order), and after each queue run
the next, up to `max_tasks` a night. Outside the queue such an agent does not start a `todo`
task (an assignment waits for the night); tasks in progress go on as usual.

Nothing is taken when the agent is paused or its month's budget is spent; `alerts` is told
once a night."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AgentConfig, Config
from bot.views.coding import queue_skipped
from bot.views.text import usd
from storage import budget_holds, outbox, runs
from storage import queue as task_queue
from storage import usage as spend
from storage.db import Database
from storage.models import AgentState, Run, utcnow
from storage.statuses import TaskStatus

NIGHT = timedelta(hours=12)  # queue runs counted towards tonight's max_tasks


def waits_for_queue(agent: AgentConfig, task_status: str, trigger: str) -> bool:
    """Whether a run of `agent` on a task in `task_status` must wait for the nightly queue."""
    return (
        agent.queue is not None
        and task_status == TaskStatus.TODO
        and trigger != task_queue.QUEUE_TRIGGER
    )


async def nightly(config: Config, db: Database, agent_id: str) -> None:
    agent = next((a for a in config.agents if a.id == agent_id), None)
    if agent is None or agent.queue is None:
        return
    night = datetime.now(config.tz).date()
    async with db.claim() as session:
        why = await _why_not(session, agent)
        if why is not None:
            await _alert(
                session,
                config,
                queue_skipped(agent.id, why),
                f"queue-skipped:{agent.id}:{night}",
            )
            return
        await take_next(session, agent, first=True)


async def take_next(session: AsyncSession, agent: AgentConfig, *, first: bool = False) -> bool:
    """Start a queue run on the agent's most urgent todo task, if tonight's max_tasks allows."""
    assert agent.queue is not None
    if not first:
        taken = await session.scalar(
            select(func.count(Run.id)).where(
                Run.agent_id == agent.id,
                Run.trigger == task_queue.QUEUE_TRIGGER,
                Run.queued_at >= utcnow() - NIGHT,
            )
        )
        if (taken or 0) >= agent.queue.max_tasks or await _why_not(session, agent):
            return False
    queue = await task_queue.listing(session, agent.id, limit=1)
    if not queue:
        return False
    await runs.wake(session, agent.id, task_queue.QUEUE_TRIGGER, task_id=queue[0].id)
    return True


async def _why_not(session: AsyncSession, agent: AgentConfig) -> str | None:
    state = await session.get(AgentState, agent.id)
    if state is not None and state.paused:
        return "the agent is paused"
    now = utcnow()
    since = spend.month_start(now)
    seen = await budget_holds.standing(session, agent.id, since, fleet=False, now=now)
    limit = spend.effective_budget(seen.override, agent.budget_usd_month)
    if limit is not None and seen.spent >= limit:
        return f"its monthly budget is spent ({usd(seen.spent)} of {usd(limit)})"
    return None


async def _alert(session: AsyncSession, config: Config, text: str, key: str) -> None:
    feed = config.feed("alerts")
    if feed is None:
        return
    await outbox.enqueue(
        session, outbox.Destination(feed.chat_id, feed.topic, "alerts"), text, dedup_key=key
    )
