"""Scheduled heartbeats: each wake queues a run if the agent has something to do, or records a
skipped run; and the pruning of old idle heartbeats. No model is called here."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from agents import workspace
from agents.org import OrgChart
from bot.config import AgentConfig, Config, RuntimeConfig
from storage import runs
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)


class Heartbeats:
    """The heartbeat part of `agents.runtime.Runtime` (which sets these attributes)."""

    config: Config
    db: Database
    org: OrgChart
    settings: RuntimeConfig

    def workspace_of(self, agent: AgentConfig) -> Path:
        folder = agent.workspace
        return folder if folder.is_absolute() else self.config.path.parent / folder

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


def heartbeat_seconds(agent: AgentConfig) -> int | None:
    return int(agent.heartbeat.total_seconds()) if agent.heartbeat else None
