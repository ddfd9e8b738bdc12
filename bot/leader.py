"""Which node leads: the one holding the poller lock polls Telegram, runs the fleet-wide jobs
and the outbox sender; every other node on the same PostgreSQL database is a standby.

A standby tries the lock every third of `[node] leader_takeover`, so it leads within that time
of the leader's death (PostgreSQL drops a session's advisory locks when its connection ends:
kill -9, a lost network). The leader checks that its lock connection still answers before each
getUpdates and every third of `leader_takeover`; when it does not, it steps down at once (stops
polling, the leader jobs and the sender) rather than risk two pollers. On SQLite the file lock
is held for the life of the process and the one process always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum

from bot.poller_lock import AdvisoryLock
from bot.polling import PollingSupervisor
from bot.scheduler import Scheduler
from bot.sender import Sender
from bot.update_ledger import replay
from storage import slots, updates
from storage.db import Database

log = logging.getLogger(__name__)

# How long the lock connection may take to answer `SELECT 1` before the leader steps down.
ALIVE_TIMEOUT = 2.0
# Seconds the sender gets to finish the parts in flight when the node stops leading.
SENDER_GRACE = 10.0

Duties = Callable[[asyncio.Event], Awaitable[None]]


class NodeRole(StrEnum):
    leader = "leader"
    standby = "standby"


class Leadership:
    """This node's role, and the loop that changes it. `lock` is None on SQLite (the process
    holds the file lock already and always leads)."""

    def __init__(self, lock: AdvisoryLock | None, *, node: str, takeover: float) -> None:
        self.lock = lock
        self.node = node
        self.takeover = takeover
        self.try_every = max(0.5, takeover / 3)
        self.role = NodeRole.standby
        self.changes = 0  # role changes so far (the first lead counts)
        self.since = time.monotonic()  # when this node last became the leader (or started)
        self._term: asyncio.Event | None = None

    @property
    def is_leader(self) -> bool:
        return self.role is NodeRole.leader

    async def alive(self) -> bool:
        """Whether this node still leads: its lock connection answers within ALIVE_TIMEOUT.
        When it does not, the node steps down at once (the duties' event is set)."""
        if not self.is_leader:
            return False
        if self.lock is None or await self.lock.alive(ALIVE_TIMEOUT):
            return True
        self._step_down("its lock connection to PostgreSQL did not answer")
        return False

    async def run(self, stop: asyncio.Event, duties: Duties) -> None:
        """Until `stop`: win the lock, then run `duties(term)` until `term` is set (at `stop`,
        or when the lock is lost), then go back to standby. An exception from the duties
        (the token rejected) ends the loop."""
        while not stop.is_set():
            if not await self._win(stop):
                return
            term = asyncio.Event()
            self._term = term
            self.role = NodeRole.leader
            self.since = time.monotonic()
            self.changes += 1
            log.info("role: leader (node %s holds the poller lock; polling Telegram)", self.node)
            watcher = asyncio.create_task(self._watch(stop, term), name="leader-watch")
            try:
                await duties(term)
            finally:
                term.set()
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                self.role = NodeRole.standby
                self._term = None
            if stop.is_set():
                return
            if self.lock is not None:
                await self.lock.abandon()
            log.warning(
                "role: standby (node %s stopped leading; trying the lock every %g s)",
                self.node,
                self.try_every,
            )

    async def _win(self, stop: asyncio.Event) -> bool:
        """Wait until this node holds the lock (True) or `stop` is set (False)."""
        if self.lock is None:
            return True
        announced = False
        while not stop.is_set():
            try:
                if await self.lock.try_acquire():
                    return True
            except Exception as err:  # noqa: BLE001 - the database is away: try again later
                log.warning("could not try the poller lock: %s: %s", type(err).__name__, err)
            if not announced:
                log.info(
                    "role: standby (node %s: %s polls this bot; trying the lock every %g s)",
                    self.node,
                    await self._holder(),
                    self.try_every,
                )
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.try_every)
        return False

    async def _holder(self) -> str:
        assert self.lock is not None
        try:
            return await self.lock.holder()
        except Exception:  # noqa: BLE001 - only for the log line
            return "another process"

    async def _watch(self, stop: asyncio.Event, term: asyncio.Event) -> None:
        """Set `term` at `stop`, or when the lock connection stops answering (checked every
        third of leader_takeover, besides the check before each getUpdates)."""
        while not term.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.try_every)
            if stop.is_set():
                term.set()
                return
            await self.alive()

    def _step_down(self, why: str) -> None:
        if self._term is not None and not self._term.is_set():
            log.error("stepping down: %s; stopping polling, the leader jobs and the sender", why)
            self._term.set()
        self.role = NodeRole.standby


async def lead(
    scheduler: Scheduler,
    sender: Sender,
    supervisor: PollingSupervisor,
    term: asyncio.Event,
    *,
    on_lead: Callable[[], Awaitable[None]],
) -> None:
    """The leader's duties, until `term` (shutdown, or the lock lost): the fleet-wide jobs
    (the scheduler runs them while the node leads; a slot missed in the takeover is run now),
    the outbox sender, the updates a dead leader received and did not handle, and polling."""
    try:
        await scheduler.register(fleet_wide=True)
        await scheduler.take_over()
    except Exception as err:  # noqa: BLE001 - the jobs still run at their next slots
        log.error("could not catch up the fleet-wide jobs: %s: %s", type(err).__name__, err)
    await on_lead()
    sender_task = asyncio.create_task(sender.run(term), name="outbox-sender")
    try:
        try:
            await replay(supervisor.dp, supervisor.bot, scheduler.db)
        except Exception as err:  # noqa: BLE001 - the next leader or restart tries again
            log.error("could not read the unhandled updates: %s: %s", type(err).__name__, err)
        await supervisor.run(term)
    finally:
        term.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(sender_task, SENDER_GRACE)


async def prune_ledgers(db: Database) -> None:
    """Forget old updates and job slots (the ledgers are read only around a takeover)."""
    now = datetime.now(UTC)
    async with db.session() as session:
        await updates.prune(session, now)
        await slots.prune(session, now)
