"""APScheduler, with every job wrapped so that it writes a job beat (start, finish, error)
and claims its slot in the slot ledger (storage.slots) before it runs.

The scheduler's job store is in memory and rebuilt at start from the config and the database;
the job beats and slots in the database, not the job store, are the record of what ran. Every
node computes the same slots: interval triggers start at a fixed epoch (plus a stable offset per
job, so jobs spread over their interval), not at the process's start, and a slot is the time
APScheduler scheduled the run for. Fleet-wide jobs run only on the leader (bot.leader); a
node that becomes the leader runs, once, a slot nobody ran during the takeover (`take_over`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.cron import crontab_trigger
from storage import jobs, slots
from storage.db import Database

log = logging.getLogger(__name__)

JobFunc = Callable[[], Awaitable[None]]


class JobFailed(Exception):
    """A job found something wrong that is not a bug: recorded and logged without traceback."""


# Interval triggers count from here, so every node's slots of a job are the same times.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

# The time APScheduler scheduled the run being started for (set by _SlotExecutor).
_SCHEDULED: ContextVar[datetime | None] = ContextVar("fleet_scheduled", default=None)


class _SlotExecutor(AsyncIOExecutor):  # type: ignore[misc]  # APScheduler 3 is untyped
    """Hands a job its scheduled run time: APScheduler passes it to executors, not to jobs.
    The job's task is created inside `_do_submit_job` and copies the context there."""

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        token = _SCHEDULED.set(run_times[-1] if run_times else None)
        try:
            super()._do_submit_job(job, run_times)
        finally:
            _SCHEDULED.reset(token)


def due_slot(trigger: BaseTrigger, now: datetime, lookback: timedelta) -> datetime | None:
    """The latest time `trigger` fired at or before `now`, if it fired within `lookback`."""
    slot: datetime | None = None
    fire: datetime | None = trigger.get_next_fire_time(None, now - lookback)
    while fire is not None and fire <= now:
        slot = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return slot


@dataclass(frozen=True)
class _Slotted:
    """What `take_over` needs of a fleet-wide job: its trigger and the job itself."""

    trigger: BaseTrigger
    func: JobFunc


class Scheduler:
    """Jobs are fleet-wide (the default: run by the leader only, see bot.leader) or, with
    `everywhere=True`, run by every node that schedules them (checks)."""

    def __init__(
        self,
        db: Database,
        leading: Callable[[], bool] = lambda: True,
        *,
        node: str = "local",
        catch_up: float = 60.0,
        ledger: bool | None = None,
    ) -> None:
        """`ledger`: claim each run's slot in the slot ledger; by default where several nodes
        may share the database (PostgreSQL). A single SQLite process has no other node to
        share slots with and skips the write (most of an idle heartbeat's cost)."""
        self.db = db
        self.leading = leading
        self.node = node
        self.ledger = not db.is_sqlite if ledger is None else ledger
        # How far back a new leader looks for a slot nobody ran (see take_over).
        self.catch_up = timedelta(seconds=catch_up)
        # the jobs only the leader runs
        self.fleet_wide: dict[str, _Slotted] = {}
        self.scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": _SlotExecutor()})
        self._running: set[asyncio.Task[Any]] = set()
        self._catching_up: set[asyncio.Task[None]] = set()
        # Jobs with a run going (scheduled or catch-up): never two runs of one job at once.
        self._busy: set[str] = set()
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
        trigger = _aligned(job_id, seconds)
        self.scheduler.add_job(
            self._tracked(
                self._gated(job_id, trigger, self._with_beat(job_id, whole, func), everywhere)
            ),
            trigger,
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
        trigger = crontab_trigger(cron, tz) if cron else _aligned(agent_id, every or 1800)
        self.scheduler.add_job(
            self._tracked(self._gated(f"heartbeat:{agent_id}", trigger, func)),
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
        trigger = crontab_trigger(line, tz)
        self.scheduler.add_job(
            self._tracked(self._gated(job_id, trigger, func)),
            trigger,
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

    def _gated(
        self, job_id: str, trigger: BaseTrigger, func: JobFunc, everywhere: bool = False
    ) -> JobFunc:
        """Run `func` only if it is this node's to run: a fleet-wide job while this node leads,
        and any job only once its slot is claimed (another node may have run it)."""
        if not everywhere:
            self.fleet_wide[job_id] = _Slotted(trigger, func)

        async def run() -> None:
            if not everywhere and not self.leading():
                return
            if job_id in self._busy:  # a catch-up run of it still going: as max_instances=1
                log.info("job %s: still running; this slot is skipped", job_id)
                return
            now = datetime.now(UTC)
            slot = _SCHEDULED.get() or now  # always set when APScheduler runs it
            self._busy.add(job_id)
            try:
                if not self.ledger or await self._claim(job_id, slot, now):
                    await func()
            finally:
                self._busy.discard(job_id)

        return run

    async def _claim(self, job_id: str, slot: datetime, now: datetime) -> bool:
        async with self.db.session() as session:
            won = await slots.claim(session, job_id, slot, self.node, now)
        if not won:
            log.info("job %s: slot %s was run by another node", job_id, slot.isoformat())
        return won

    async def take_over(self) -> list[asyncio.Task[None]]:
        """On becoming the leader: run, once, each fleet-wide job whose latest slot (within
        `catch_up`) nobody claimed, if the job had run before (a slot missed while no node
        led). Several missed slots of one job make one run, as APScheduler's coalescing does
        in one process; a job that never ran on this database (a new fleet) waits for its next
        slot, as it always has; older slots are not run (a fleet that was down for hours does
        not replay them). Returns the runs started (they go on in the background)."""
        if not self.ledger:
            return []  # alone: no slots recorded, and no other node ran any
        now = datetime.now(UTC)
        due: list[tuple[str, datetime, JobFunc]] = []
        async with self.db.session() as session:
            for job_id, job in self.fleet_wide.items():
                slot = due_slot(job.trigger, now, self.catch_up)
                if slot is None:
                    continue
                previous = await slots.latest(session, job_id)
                if previous is not None and previous < slot:
                    due.append((job_id, slot, job.func))
        started: list[asyncio.Task[None]] = []
        for job_id, slot, func in due:
            if job_id in self._busy:
                continue  # it runs right now: that run is the catch-up
            # Marked busy before the claim's await, so a scheduled run starting meanwhile
            # does not run beside this one.
            self._busy.add(job_id)
            if not await self._claim(job_id, slot, now):
                self._busy.discard(job_id)
                continue
            log.warning(
                "job %s: running slot %s, missed while no node led", job_id, slot.isoformat()
            )
            task = asyncio.create_task(self._run_once(job_id, func), name=f"catch-up:{job_id}")
            self._catching_up.add(task)
            task.add_done_callback(self._catching_up.discard)
            started.append(task)
        return started

    async def _run_once(self, job_id: str, func: JobFunc) -> None:
        try:
            await self._tracked(func)()
        finally:
            self._busy.discard(job_id)

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


def _aligned(key: str, seconds: float) -> IntervalTrigger:
    """Every `seconds` from EPOCH plus a stable offset per `key`: the same times on every node,
    and 200 agents on "1m" do not all wake in the same second and queue behind each other."""
    offset = zlib.crc32(key.encode()) % seconds
    return IntervalTrigger(
        seconds=seconds, start_date=EPOCH + timedelta(seconds=offset), timezone=UTC
    )
