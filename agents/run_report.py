"""Reporting a run: its progress line in the activity feed, the record of how it ended (the run
row, its task, the inbox, the follow-up wake), what becomes of a failed run's task, the
alerts, and the escalation to the manager."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agents import coding_queue
from agents.gateway import Gateway
from agents.org import OrgChart
from agents.turn import TurnResult
from bot.config import AgentConfig, Config, RuntimeConfig
from bot.views import runs as views
from bot.views.buttons import stop_button
from bot.views.text import when
from storage import inbox, outbox, queue, runs, tasks
from storage.db import Database
from storage.models import InboxMessage, Task, utcnow
from storage.statuses import RunStatus, TaskStatus

log = logging.getLogger(__name__)

PROGRESS_EVERY = 3.0  # seconds between edits of a run's line in the activity feed


class RunReports:
    """The reporting part of `agents.runtime.Runtime` (which sets these attributes)."""

    config: Config
    db: Database
    gateway: Gateway
    org: OrgChart
    settings: RuntimeConfig
    owner: str
    _progress_at: dict[int, float]

    async def _escalate(
        self, session: AsyncSession, agent_id: str, task_id: int, why: str
    ) -> None:
        """Tell the manager (or the hub) that a task is blocked because its runs fail."""
        hub = self.org.hub.id if self.org.hub else None
        manager = self.org.manager(agent_id) or hub
        if manager is not None and manager != agent_id:
            await inbox.send(
                session,
                manager,
                kind="escalation",
                source="system:runtime",
                task_id=task_id,
                body=f"task #{task_id} of {agent_id} is blocked, retries used up: {why}",
            )

    async def _progress(
        self, run_id: int, agent_id: str, task: Task | None, step: str, so_far: TurnResult
    ) -> None:
        """Show what the run does now on its line in the activity feed: the first step posts
        the line (with a Stop button), later ones edit it, at most one edit per
        PROGRESS_EVERY seconds (Telegram limits edits like messages)."""
        feed = self.config.feed("activity")
        if feed is None:
            return
        now = time.monotonic()
        last = self._progress_at.get(run_id)
        if last is not None and now - last < PROGRESS_EVERY:
            return
        self._progress_at[run_id] = now
        text = views.progress_line(
            agent_id,
            task.id if task else None,
            step,
            so_far.input_tokens + so_far.output_tokens,
            so_far.cost_usd,
        )
        try:
            destination = outbox.Destination(feed.chat_id, feed.topic, "activity")
            await self._post_progress(destination, run_id, text, first=last is None, at=now)
        except Exception:  # showing progress must never fail the run
            log.exception("run %d: could not show its progress", run_id)

    async def _post_progress(
        self, to: outbox.Destination, run_id: int, text: str, *, first: bool, at: float
    ) -> None:
        key = f"activity:{run_id}"
        async with self.db.session() as session:  # its first statement writes
            await outbox.enqueue(
                session,
                to,
                text,
                buttons=[[stop_button(run_id)]],
                dedup_key=key if first else f"{key}:at:{at:.3f}",
                edit_of=None if first else key,
            )

    async def _record(
        self,
        claimed: runs.Claimed,
        agent: AgentConfig,
        task: Task | None,
        messages: list[InboxMessage],
        result: TurnResult,
    ) -> None:
        status = {
            "succeeded": RunStatus.SUCCEEDED,
            "deferred": RunStatus.SKIPPED,
            "cancelled": RunStatus.CANCELLED,
        }.get(result.status, RunStatus.FAILED)
        outcome = result.outcome
        # A run is recorded as finished only once the usage rows of its calls are written.
        await self.gateway.flush()
        if result.status == "deferred" and result.retry_at is not None:
            until = when(result.retry_at, self.config.tz, seconds=True)
            outcome = f"deferred until {until}: {result.outcome}"
        async with self.db.claim() as session:
            await runs.finish(
                session,
                claimed.run_id,
                self.owner,
                status,
                outcome,
                changed=result.changed,
                turns=result.turns,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                cost_usd=result.cost_usd,
            )
            unavailable = status == RunStatus.FAILED and result.cause == "unavailable"
            if (
                task is not None
                and result.status not in ("deferred", "cancelled")
                and not unavailable
            ):
                # A deferred run never reached a model: it says nothing about progress, and
                # counting it would push the retry into the idle backoff. A stopped run
                # writes nothing to its task.
                await tasks.note_run(session, task.id, changed=result.changed)
            if result.status == "succeeded":
                await inbox.mark_read(session, [m.id for m in messages])
            if result.status == "deferred":
                await runs.wake(
                    session,
                    agent.id,
                    "retry",
                    task_id=task.id if task else None,
                    not_before=result.retry_at,
                )
            task_id = task.id if task else None
            tokens = views.token_count(result.input_tokens, result.output_tokens)
            if status == RunStatus.FAILED and not result.alerted:
                await self._alert_failed(
                    session, agent.id, f"{views.on_task(task_id)}: {result.outcome} ({tokens})"
                )
            mark = views.icon(result.status, alerted=result.alerted)
            line = views.end_line(mark, agent.id, task_id, outcome, tokens)
            if claimed.run_id in self._progress_at:
                # The run's line is in the feed: its last edit says how the run ended, and
                # drops the Stop button.
                await self._post(
                    session,
                    "activity",
                    line,
                    f"activity:{claimed.run_id}:end",
                    edit_of=f"activity:{claimed.run_id}",
                )
            elif result.changed:
                await self._post(session, "activity", line, f"activity:{claimed.run_id}")
            if status == RunStatus.FAILED and task is not None:
                await self._after_failure(session, claimed, agent.id, task, result)
            elif status == RunStatus.FAILED and result.cause == "unavailable":
                # Its unread messages wait for a model, not for the next heartbeat.
                retry_at = await self._backoff(session, agent.id)
                await runs.wake(session, agent.id, runs.RETRY, not_before=retry_at)
            if claimed.trigger == queue.QUEUE_TRIGGER and result.status != "deferred":
                await coding_queue.take_next(session, agent)
            elif agent.queue is None and await _has_todo(session, agent.id):
                await runs.wake(session, agent.id, "followup")

    async def _after_failure(
        self,
        session: AsyncSession,
        claimed: runs.Claimed,
        agent_id: str,
        task: Task,
        result: TurnResult,
    ) -> None:
        """What becomes of a failed run's task. Never left in_progress for a heartbeat that
        may never come, and never retried at once: the retry waits the failure backoff."""
        # A budget stop paused the agent: raising the budget resumes and wakes it, and must
        # not find a backoff in its way.
        retry_at = None if result.cause == "budget" else await self._backoff(session, agent_id)
        if result.cause == "config":
            # Retrying cannot help until the config changes: blocked with the reason.
            outcome = await tasks.transition(
                session,
                task.id,
                TaskStatus.BLOCKED,
                actor="system:runtime",
                note=f"no model can run it until the configuration is fixed: {result.outcome}",
            )
            if outcome.won:
                await self._escalate(session, agent_id, task.id, result.outcome)
            return
        if result.cause == "unavailable":
            # No model answered (5xx, network): the task keeps its retries and waits.
            await runs.wake(session, agent_id, runs.RETRY, task_id=task.id, not_before=retry_at)
            return
        # The run itself failed: retried until max_retries, then blocked and escalated.
        blocked = await runs.return_task(session, task.id, claimed.run_id, "failed")
        if blocked:
            await self._escalate(session, agent_id, task.id, result.outcome)
        else:
            await runs.wake(session, agent_id, runs.RETRY, task_id=task.id, not_before=retry_at)

    async def _backoff(self, session: AsyncSession, agent_id: str) -> datetime:
        """When the agent may run again after its failed runs in a row: `retry_backoff`,
        doubling with each, up to `retry_backoff_max`."""
        streak = await runs.failure_streak(session, agent_id)
        first = self.settings.retry_backoff.total_seconds()
        longest = self.settings.retry_backoff_max.total_seconds()
        seconds = min(longest, first * 2 ** min(max(streak.count - 1, 0), 30))
        return utcnow() + timedelta(seconds=seconds)

    async def _alert_failed(self, session: AsyncSession, agent_id: str, detail: str) -> None:
        """One alert message per streak of failed runs of an agent, edited with the count
        ("coder: 5 runs failed since 14:02, last: ...") instead of one message per run."""
        streak = await runs.failure_streak(session, agent_id)
        first = f"runs-failed:{agent_id}:{streak.first_run_id}"
        text = views.failed_alert(agent_id, streak.count, streak.since, self.config.tz, detail)
        feed = self.config.feed("alerts")
        if feed is None:
            return
        await outbox.enqueue(
            session,
            outbox.Destination(feed.chat_id, feed.topic, "alerts"),
            text,
            dedup_key=first if streak.count <= 1 else f"{first}:{streak.count}",
            edit_of=None if streak.count <= 1 else first,
        )

    async def _finish(self, claimed: runs.Claimed, status: str, outcome: str) -> None:
        async with self.db.claim() as session:
            await runs.finish(session, claimed.run_id, self.owner, status, outcome)

    async def _finish_failed(self, claimed: runs.Claimed, outcome: str) -> None:
        async with self.db.claim() as session:
            if await runs.finish(session, claimed.run_id, self.owner, RunStatus.FAILED, outcome):
                await self._alert_failed(
                    session, claimed.agent_id, f" (run {claimed.run_id}): {outcome}"
                )
                await self._end_line(session, claimed, views.crashed(claimed.agent_id))

    async def _interrupted(self, claimed: runs.Claimed) -> None:
        """Shutdown cut a run short: close it and put its task back for the next start."""
        async with self.db.claim() as session:
            if not await runs.finish(
                session, claimed.run_id, self.owner, RunStatus.FAILED, "interrupted by shutdown"
            ):
                return
            await self._end_line(session, claimed, views.interrupted(claimed.agent_id))
            current = await tasks.next_for(session, claimed.agent_id, claimed.task_id)
            if current is not None and current.status == TaskStatus.IN_PROGRESS:
                await tasks.transition(
                    session,
                    current.id,
                    TaskStatus.TODO,
                    actor="system:shutdown",
                    note=f"run {claimed.run_id} was interrupted by a shutdown",
                )
                await runs.wake(session, claimed.agent_id, "retry", task_id=current.id)

    async def _end_line(self, session: AsyncSession, claimed: runs.Claimed, text: str) -> None:
        """A run that ended outside `_record` (crash, shutdown): its line in the activity
        feed says so and loses its Stop button."""
        if claimed.run_id in self._progress_at:
            key = f"activity:{claimed.run_id}"
            await self._post(session, "activity", text, f"{key}:end", edit_of=key)

    async def _post(
        self,
        session: AsyncSession,
        feed_name: str,
        text: str,
        key: str,
        *,
        edit_of: str | None = None,
    ) -> None:
        feed = self.config.feed(feed_name)
        if feed is None:
            return
        await outbox.enqueue(
            session,
            outbox.Destination(feed.chat_id, feed.topic, feed_name),
            text,
            dedup_key=key,
            edit_of=edit_of,
        )


async def _has_todo(session: AsyncSession, agent_id: str) -> bool:
    stmt = (
        select(Task.id).where(Task.assignee == agent_id, Task.status == TaskStatus.TODO).limit(1)
    )
    return (await session.execute(stmt)).first() is not None
