"""The reaper: returns the tasks of runs whose lease expired (their process died) and wakes the
assignee, or escalates a task whose runs kept dying."""

from __future__ import annotations

import logging

from agents.run_report import RunReports, _has_todo
from bot.views import runs as views
from storage import runs

log = logging.getLogger(__name__)


class Reaper(RunReports):
    """The reaper part of `agents.runtime.Runtime`."""

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
