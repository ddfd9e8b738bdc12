"""The run worker: claims queued runs, executes each (its context, then the model turn or the
coding CLI) and passes stop requests on to the runs in flight. `Runtime` is its entry point;
the scheduled wakes are in agents.heartbeats, the reaper in agents.reaper, how a run is
reported in agents.run_report and what it is given in agents.run_context.

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

from agents import coding_queue, process_adapter, workspace, workspace_prompt
from agents.gateway import Gateway
from agents.heartbeats import Heartbeats
from agents.org import OrgChart
from agents.reaper import Reaper
from agents.run_context import _brief, _escalated_task, _task_for
from agents.tools_base import ToolContext
from agents.turn import StopSignal, TurnResult, run_turn
from bot.config import Config
from storage import artifacts, inbox, nodes, runs, tasks
from storage.db import Database
from storage.models import AgentState, utcnow
from storage.statuses import RunStatus, TaskStatus

log = logging.getLogger(__name__)

STOP_POLL = 1.0  # seconds between looks for stop requests made by another process


class Runtime(Heartbeats, Reaper):
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
            task, news = await _task_for(session, claimed)
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
        system = workspace_prompt.render_system_prompt(agent.id, agent.title or agent.id, files)
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
