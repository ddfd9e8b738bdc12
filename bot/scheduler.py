"""APScheduler, with every job wrapped so that it writes a job beat (start, finish, error).

The scheduler's job store is in memory and rebuilt at start from the config and the database;
the job beats in the database, not the job store, are the record of what ran.
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.cron import crontab_trigger
from storage import jobs
from storage.db import Database

log = logging.getLogger(__name__)

JobFunc = Callable[[], Awaitable[None]]


class JobFailed(Exception):
    """A job found something wrong that is not a bug: recorded and logged without traceback."""


class Scheduler:
    """Jobs are fleet-wide (the default: run by the leader only, see bot.leader) or, with
    `everywhere=True`, run by every node that schedules them (checks)."""

    def __init__(self, db: Database, leading: Callable[[], bool] = lambda: True) -> None:
        self.db = db
        self.leading = leading
        # ids of the jobs only the leader runs
        self.fleet_wide: set[str] = set()
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: set[asyncio.Task[Any]] = set()
        # job id -> interval in seconds of every `every` job, for the watchdog.
        self.intervals: dict[str, int] = {}

    def every(
        self, job_id: str, seconds: float, func: JobFunc, *, everywhere: bool = False
    ) -> None:
        """Run `func` every `seconds`; overlapping and missed runs are merged into one.
        An interval under a second ("200ms", in tests) counts as one second in the job beats
        and for the watchdog, which keep whole seconds."""
        whole = max(1, math.ceil(seconds))
        self.intervals[job_id] = whole
        self.scheduler.add_job(
            self._tracked(self._gated(job_id, self._with_beat(job_id, whole, func), everywhere)),
            IntervalTrigger(seconds=seconds, timezone=UTC),
            id=job_id,
            name=job_id,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, whole // 2),
            replace_existing=True,
        )

    def agent_heartbeat(
        self, agent_id: str, func: JobFunc, *, every: int | None, cron: str | None, tz: tzinfo
    ) -> None:
        """An agent's heartbeat. No job beat: the runs table is the record of heartbeats."""
        if cron:
            trigger = crontab_trigger(cron, tz)
        else:
            # Spread agents over the interval (stable per agent), so 200 agents on "1m" do not
            # all wake in the same second and queue behind each other.
            seconds = every or 1800
            offset = zlib.crc32(agent_id.encode()) % seconds
            start = datetime.now(UTC) + timedelta(seconds=offset)
            trigger = IntervalTrigger(seconds=seconds, start_date=start, timezone=UTC)
        self.scheduler.add_job(
            self._tracked(self._gated(f"heartbeat:{agent_id}", func)),
            trigger,
            id=f"heartbeat:{agent_id}",
            name=f"heartbeat:{agent_id}",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=60,
            replace_existing=True,
        )

    def cron(self, job_id: str, line: str, tz: tzinfo, func: JobFunc) -> None:
        """Run `func` at the times of a crontab line (a coding agent's nightly queue)."""
        self.scheduler.add_job(
            self._tracked(self._gated(job_id, func)),
            crontab_trigger(line, tz),
            id=job_id,
            name=job_id,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=300,
            replace_existing=True,
        )

    def _with_beat(self, job_id: str, seconds: int, func: JobFunc) -> JobFunc:
        async def run() -> None:
            async with self.db.session() as session:
                await jobs.started(session, job_id, datetime.now(UTC), seconds)
            error: str | None = None
            try:
                await func()
            except JobFailed as err:
                error = str(err)
                log.error("job %s: %s", job_id, err)
            except Exception as err:  # a job failure is recorded, never fatal
                error = f"{type(err).__name__}: {err}"
                log.exception("job %s failed", job_id)
            async with self.db.session() as session:
                await jobs.finished(session, job_id, datetime.now(UTC), error)

        return run

    def _gated(self, job_id: str, func: JobFunc, everywhere: bool = False) -> JobFunc:
        """A fleet-wide job runs only while this node leads."""
        if everywhere:
            return func
        self.fleet_wide.add(job_id)

        async def run() -> None:
            if self.leading():
                await func()

        return run

    def _tracked(self, func: JobFunc) -> JobFunc:
        """Remember the job's task while it runs, so shutdown can let it finish instead of
        cancelling it half-way through a database write."""

        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await func()
            finally:
                if task is not None:
                    self._running.discard(task)

        return run

    async def register(self, *, fleet_wide: bool) -> None:
        """Record that this process runs each `every` job from now on, so the watchdog outside
        (`fleet watchdog --once`) gives a job just started its first interval before it counts
        as late. The fleet-wide jobs are registered when this node becomes the leader."""
        now = datetime.now(UTC)
        async with self.db.session() as session:
            for job_id, seconds in self.intervals.items():
                if (job_id in self.fleet_wide) == fleet_wide:
                    await jobs.registered(session, job_id, now, seconds)

    def start(self) -> None:
        self.scheduler.start()

    async def shutdown(self, grace: float) -> None:
        """Start no more jobs; give the running ones `grace` seconds to finish."""
        # APScheduler's asyncio executor cancels running jobs at shutdown, so stop new runs
        # first (pause), let the running ones finish, and only then shut it down.
        self.scheduler.pause()
        await asyncio.sleep(0)  # a job task created just now registers in `_running`
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        self.scheduler.shutdown(wait=False)
