"""Heartbeat runs: scheduled wakes, the worker that claims and executes queued runs, and the
reaper that returns the tasks of dead runs.

Runs are short and stateless: a run reads its agent's task, inbox and workspace from the
database and disk, calls the model through the gateway, writes what happened, and exits. A run
whose process dies is found by its expired lease and retried from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agents import coding_queue, process_adapter, workspace
from agents.gateway import Gateway
from agents.org import OrgChart
from agents.tools_base import ToolContext
from agents.turn import StopSignal, TurnResult, run_turn
from bot.config import AgentConfig, Config
from bot.views import runs as views
from bot.views.buttons import stop_button
from bot.views.text import when
from storage import artifacts, inbox, nodes, outbox, queue, runs, tasks
from storage.db import Database
from storage.models import AgentState, Artifact, InboxMessage, Task, TaskEvent, utcnow
from storage.statuses import RunStatus, TaskStatus

log = logging.getLogger(__name__)

STOP_POLL = 1.0  # seconds between looks for stop requests made by another process
PROGRESS_EVERY = 3.0  # seconds between edits of a run's line in the activity feed


class Runtime:
    def __init__(
        self,
        config: Config,
        db: Database,
        gateway: Gateway,
        *,
        placement: nodes.Placement | None = None,
    ) -> None:
        """`placement`: this node (its lease owner, the agents it leaves to other nodes);
        None: this process, running every agent."""
        self.config = config
        self.db = db
        self.gateway = gateway
        self.org = OrgChart(config)
        self.settings = config.runtime
        self.lease = timedelta(seconds=self.settings.lease_seconds)
        self.window = self.settings.wake_window
        if placement is None:
            placement = nodes.Placement(nodes.Identity.this_process("local"), shared=False)
        self.owner = placement.node.owner
        self.elsewhere = placement.agents_elsewhere
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        db.on_commit("runs", self._wake.set)
        # Stop requests: a commit in this process pokes the watcher at once; one from another
        # process is found by the watcher's poll (STOP_POLL) of the runs this process holds.
        self._stops: dict[int, StopSignal] = {}
        self._stop_poke = asyncio.Event()
        db.on_commit("runs-stop", self._stop_poke.set)
        self._progress_at: dict[int, float] = {}

    def workspace_of(self, agent: AgentConfig) -> Path:
        folder = agent.workspace
        return folder if folder.is_absolute() else self.config.path.parent / folder

    # -- scheduled heartbeats -------------------------------------------------------------

    async def heartbeat(self, agent_id: str) -> None:
        """A scheduled heartbeat: queue a run if the agent has something to do, else record a
        skipped run. No model is called here."""
        agent = self.org.get(agent_id)
        tz = self.config.tz
        quiet = agent.quiet_hours if agent is not None else None
        if agent is None or (quiet is not None and quiet.contains(datetime.now(tz), tz)):
            return
        standing = workspace.heartbeat_has_tasks(self.workspace_of(agent))
        if not standing:
            async with self.db.session() as session:
                if await runs.record_if_idle(session, agent_id):
                    return
        async with self.db.session() as session:
            state = await runs.heartbeat_state(session, agent_id)
        if state.paused:
            outcome = "paused"
        elif state.task_id is not None or state.unread or standing:
            async with self.db.claim() as session:
                # With the task named, a task that keeps making no progress backs off.
                await runs.wake(session, agent_id, "schedule", task_id=state.task_id)
            return
        else:
            outcome = "nothing to do"
        async with self.db.session() as session:  # a single INSERT: no lock upgrade
            await runs.record_skipped(session, agent_id, "schedule", outcome)

    # -- the worker -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and execute due runs until `stop`; then let runs in flight finish for a
        grace period and hand the rest back to the queue."""
        last_reap = 0.0
        watcher = asyncio.create_task(self._watch_stops(), name="run-stops")
        while not stop.is_set():
            delay = 1.0
            try:
                if time.monotonic() - last_reap > self.lease.total_seconds() / 2:
                    await self.reap()
                    last_reap = time.monotonic()
                await self._claim()
                async with self.db.session() as session:
                    due = await runs.next_due_at(
                        session, self.window, exclude=self.elsewhere, owner=self.owner
                    )
                if due is not None:
                    delay = min(delay, max(0.0, (due - utcnow()).total_seconds()))
            except Exception:  # the worker must outlive a database hiccup
                log.exception("run worker pass failed")
            self._wake.clear()
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._wake.wait()),
            ]
            await asyncio.wait(
                waiters, timeout=max(delay, 0.01), return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in waiters:
                waiter.cancel()
        await self._drain()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_stops(self) -> None:
        """Signal the runs in flight a person asked to stop: at once for a request made in
        this process, within STOP_POLL seconds for one made in another."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_poke.wait(), STOP_POLL)
            self._stop_poke.clear()
            if not self._stops:
                continue
            try:
                async with self.db.session() as session:
                    asked = await runs.stops_requested(session, list(self._stops))
            except Exception:  # the watcher must outlive a database hiccup
                log.exception("could not read stop requests")
                continue
            for run_id, by in asked.items():
                signal = self._stops.get(run_id)
                if signal is not None and not signal.requested:
                    log.info("run %d: stop requested by %s", run_id, by)
                    signal.set(self._who(by))

    def _who(self, actor: str) -> str:
        kind, _, ident = actor.partition(":")
        if kind == "person" and ident.isdigit():
            person = self.config.person(int(ident))
            if person is not None:
                return person.name
        return actor

    async def _claim(self) -> None:
        free = self.settings.max_concurrent_runs - len(self._running)
        if free <= 0:
            return
        async with self.db.claim() as session:
            claimed = await runs.claim_due(
                session,
                self.owner,
                self.lease,
                exclude=set(self._running) | self.elsewhere,
                limit=free,
                window=self.window,
            )
        for run in claimed:
            task = asyncio.create_task(self._execute(run), name=f"run-{run.run_id}")
            self._running[run.agent_id] = task
            task.add_done_callback(self._forget(run.agent_id))

    def _forget(self, agent_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_: asyncio.Task[None]) -> None:
            self._running.pop(agent_id, None)

        return forget

    async def _drain(self) -> None:
        if not self._running:
            return
        pending = list(self._running.values())
        log.info("waiting for %d run(s) in flight", len(pending))
        _, still = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_seconds)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still)

    async def prune(self) -> None:
        """Delete idle heartbeats older than `keep_idle_runs_days`, in short transactions."""
        before = utcnow() - timedelta(days=self.settings.keep_idle_runs_days)
        total = 0
        while True:
            async with self.db.session() as session:
                deleted = await runs.prune_idle(session, before)
            total += deleted
            if deleted < runs.PRUNE_BATCH:
                break
        if total:
            log.info("deleted %d idle heartbeat run(s) older than %s", total, f"{before:%Y-%m-%d}")

    async def reap(self) -> None:
        """Return the tasks of runs whose lease expired; wake the assignee or the manager."""
        async with self.db.claim() as session:
            reaped = await runs.reap_expired(session)
            for dead in reaped:
                log.warning("run %d of %s died (lease expired)", dead.run_id, dead.agent_id)
                if dead.task_id is None:
                    continue
                if dead.task_blocked:
                    await self._escalate(
                        session, dead.agent_id, dead.task_id, "its runs kept dying"
                    )
                    await self._post(
                        session,
                        "alerts",
                        views.kept_dying(dead.task_id, dead.agent_id),
                        f"reaped-blocked:{dead.run_id}",
                    )
                    # Like the end of a run: the agent's other work is not left for the next
                    # heartbeat.
                    if await _has_todo(session, dead.agent_id):
                        await runs.wake(session, dead.agent_id, "followup")
                else:
                    await runs.wake(session, dead.agent_id, "retry", task_id=dead.task_id)

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

    # -- one run --------------------------------------------------------------------------

    async def _execute(self, claimed: runs.Claimed) -> None:
        renewer = asyncio.create_task(self._renew(claimed.run_id))
        self._stops[claimed.run_id] = StopSignal()
        self._stop_poke.set()  # a stop may have come between the claim and now
        try:
            await self._execute_inner(claimed)
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupted(claimed))
            raise
        except Exception as err:
            log.exception("run %d of %s crashed", claimed.run_id, claimed.agent_id)
            await self._finish_failed(claimed, f"crashed: {type(err).__name__}: {err}")
        finally:
            renewer.cancel()
            self._stops.pop(claimed.run_id, None)
            self._progress_at.pop(claimed.run_id, None)

    async def _renew(self, run_id: int) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            async with self.db.claim() as session:
                if not await runs.renew(session, run_id, self.owner, self.lease):
                    log.warning("lost the lease of run %d", run_id)
                    return

    async def _execute_inner(self, claimed: runs.Claimed) -> None:
        agent = self.org.get(claimed.agent_id)
        if agent is None:
            await self._finish(claimed, RunStatus.FAILED, "agent is no longer in the config")
            return
        now = datetime.now(self.config.tz)
        folder = self.workspace_of(agent)
        async with self.db.claim() as session:
            state = await session.get(AgentState, agent.id)
            if state is not None and state.paused:
                await runs.finish(session, claimed.run_id, self.owner, RunStatus.SKIPPED, "paused")
                return
            task, news = await self._task_for(session, claimed)
            messages = await inbox.unread(session, agent.id)
            escalated = await _escalated_task(session, claimed, messages)
            if escalated is not None:
                # Woken by an escalation: the run is about the escalated task (another
                # agent's), not about the agent's own next task.
                task = None
            standing = workspace.heartbeat_has_tasks(folder)
            if task is None and not messages and not standing:
                # Idle: recorded, and no model is called.
                await runs.finish(
                    session, claimed.run_id, self.owner, RunStatus.SKIPPED, "nothing to do"
                )
                return
            if task is not None and coding_queue.waits_for_queue(
                agent, task.status, claimed.trigger
            ):
                await runs.finish(
                    session,
                    claimed.run_id,
                    self.owner,
                    RunStatus.SKIPPED,
                    "waits for the nightly queue",
                )
                return
            if task is not None:
                if task.status == TaskStatus.TODO:
                    await tasks.transition(
                        session, task.id, TaskStatus.IN_PROGRESS, actor=f"agent:{agent.id}"
                    )
                await runs.set_task(session, claimed.run_id, task.id)
                history = await tasks.events(session, task.id, limit=20)
                handoffs = await artifacts.handoffs(session, task)
            elif escalated is not None:
                history = await tasks.events(session, escalated.id, limit=20)
                handoffs = await artifacts.handoffs(session, escalated)
            else:
                history, handoffs = [], []
        files = workspace.load_workspace(folder, now.date())
        system = workspace.render_system_prompt(agent.id, agent.title or agent.id, files)
        focus = escalated or task
        brief = _brief(
            focus, history, messages, standing, self.config, handoffs, news if task else None
        )
        ctx = ToolContext(
            config=self.config,
            org=self.org,
            db=self.db,
            agent=agent,
            run_id=claimed.run_id,
            task_id=focus.id if focus else None,
            workspace=folder,
            today=now.date(),
            now=now,
        )
        signal = self._stops.setdefault(claimed.run_id, StopSignal())

        async def progress(step: str, so_far: TurnResult) -> None:
            await self._progress(claimed.run_id, agent.id, task, step, so_far)

        if agent.adapter == "process":
            # /stop, /cancel, /pause and the Stop button reach a coding CLI too: its process
            # group is killed and the run ends cancelled.
            async def kill_on_stop() -> None:
                await signal.event.wait()
                process_adapter.stop(claimed.run_id, signal.by)

            watcher = asyncio.create_task(kill_on_stop())
            try:
                result = await process_adapter.run(
                    config=self.config,
                    db=self.db,
                    gateway=self.gateway,
                    agent=agent,
                    folder=folder,
                    run_id=claimed.run_id,
                    task=task,
                    system=system,
                    brief=brief,
                )
            finally:
                watcher.cancel()
            await self._record(claimed, agent, task, messages, result)
            return
        result = await run_turn(
            ctx,
            self.gateway,
            system=system,
            brief=brief,
            max_turns=self.settings.max_turns,
            context_budget=self.settings.context_budget_tokens,
            stop=signal,
            progress=progress,
        )
        await self._record(claimed, agent, task, messages, result)

    async def _task_for(
        self, session: AsyncSession, claimed: runs.Claimed
    ) -> tuple[Task | None, list[TaskEvent]]:
        """The task the run works on, and what is new on it. A wake that brings news for its
        task (a comment, a decision, a deploy report) runs on that task whatever its status,
        except done or cancelled."""
        news: list[TaskEvent] = []
        if claimed.task_id is not None:
            since = await runs.last_seen(
                session, claimed.agent_id, claimed.task_id, before=claimed.run_id
            )
            news = await tasks.news(session, claimed.task_id, claimed.agent_id, since)
        task = await tasks.next_for(session, claimed.agent_id, claimed.task_id, news=bool(news))
        if task is not None and task.id != claimed.task_id:
            since = await runs.last_seen(session, claimed.agent_id, task.id, before=claimed.run_id)
            news = await tasks.news(session, task.id, claimed.agent_id, since)
        return task, news

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


async def _escalated_task(
    session: AsyncSession, claimed: runs.Claimed, messages: list[InboxMessage]
) -> Task | None:
    """The task of the first unread escalation, unless the run was woken for a task of the
    agent's own (a merged wake keeps the first wake's trigger, so that is not looked at)."""
    if claimed.task_id is not None:
        return None
    for message in messages:
        if message.kind == "escalation" and message.task_id is not None:
            return await tasks.get(session, message.task_id)
    return None


async def _has_todo(session: AsyncSession, agent_id: str) -> bool:
    stmt = (
        select(Task.id).where(Task.assignee == agent_id, Task.status == TaskStatus.TODO).limit(1)
    )
    return (await session.execute(stmt)).first() is not None


def _brief(
    task: Task | None,
    history: list[TaskEvent],
    messages: list[InboxMessage],
    standing: bool,
    config: Config,
    handoffs: list[Artifact] | None = None,
    news: list[TaskEvent] | None = None,
) -> str:
    """The first user message of a run: what is new, the task, its recent history, the files
    its parent and sibling tasks produced (handoffs), the inbox."""
    lines: list[str] = []
    if task is not None and news:
        lines += [f"New on task #{task.id} since your last run:"]
        for event in news:
            change = f" {event.from_status}->{event.to_status}" if event.to_status else ""
            body = f": {event.body}" if event.body else ""
            lines.append(f"- {event.actor} {event.kind}{change}{body}")
        lines.append("")
    if task is not None:
        priority = next((k for k, v in tasks.PRIORITIES.items() if v == task.priority), "normal")
        lines += [
            f"Your task: #{task.id} {task.title}",
            f"Status: {task.status} · priority {priority} · created by {task.creator}",
        ]
        if task.body:
            lines += ["", "Task description:", task.body]
        if history:
            lines += ["", "History (oldest first):"]
            for event in history:
                when = event.created_at.astimezone(config.tz).strftime("%Y-%m-%d %H:%M")
                change = f" {event.from_status}->{event.to_status}" if event.to_status else ""
                body = f": {event.body}" if event.body else ""
                lines.append(f"- {when} {event.actor} {event.kind}{change}{body}")
    if handoffs:
        lines += ["", "Files from related tasks (read them with read_file):"]
        for artifact in handoffs:
            when = artifact.created_at.astimezone(config.tz).strftime("%Y-%m-%d %H:%M")
            lines.append(
                f"- {artifact.root}:{artifact.path} ({artifact.bytes} bytes, written by "
                f"{artifact.agent_id} for task #{artifact.task_id}, {when})"
            )
    if messages:
        lines += ["", "Inbox (unread):"]
        lines += [f"- from {m.source}: {m.body}" for m in messages]
    if standing:
        lines += ["", "Also do the standing checks listed in HEARTBEAT.md."]
    lines += [
        "",
        "Work with the tools. When the task is finished, call set_status with the evidence; "
        "if you cannot continue, set it blocked with the reason. Keep this run short.",
    ]
    return "\n".join(lines)


def heartbeat_seconds(agent: AgentConfig) -> int | None:
    return int(agent.heartbeat.total_seconds()) if agent.heartbeat else None
