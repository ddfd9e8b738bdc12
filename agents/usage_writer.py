"""Usage rows written behind the calls: a call's row (and the release of its budget hold)
is queued when the call returns and written a moment later in one transaction with the rows
of concurrent and back-to-back calls, instead of in the call's path.

A run flushes before it is recorded as finished, and so does shutdown. A process killed in
between loses the rows of its last `USAGE_WRITE_DELAY` of calls, never a finished run's; their
holds expire (storage.budget_holds) so the budget they reserved is not lost for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from storage import budget_holds
from storage import usage as spend
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

USAGE_WRITE_DELAY = 0.1  # seconds a usage row may wait to be written with others

# What is written with the rows, in their transaction: the alert of each model without a
# price (called once per model and flush).
Unpriced = Callable[[AsyncSession, str], Awaitable[None]]
# Called after the rows are written, with the agents whose spend grew.
Written = Callable[[set[str]], Awaitable[None]]


def usage_row(
    agent_id: str,
    run_id: int | None,
    purpose: str,
    model: str,
    profile: str,
    *,
    cost: Decimal,
    price_known: bool,
    latency_ms: int,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_writes: tuple[int, int] = (0, 0),
    cache_read_tokens: int = 0,
    fallback_used: bool = False,
    error: str | None = None,
) -> dict[str, Any]:
    """The values of one usage row. `cache_writes`: (all cache-write tokens, those written to
    the 1-hour cache); `error`: what failed, if the call did (already redacted)."""
    return {
        "agent_id": agent_id,
        "run_id": run_id,
        "purpose": purpose,
        "model": model[:64],
        "profile": profile[:32],
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_write_tokens": cache_writes[0],
        "cache_write_1h_tokens": cache_writes[1],
        "cache_read_tokens": cache_read_tokens,
        "cost_usd": cost,
        "price_known": price_known,
        "latency_ms": latency_ms,
        "fallback_used": fallback_used,
        "status": "ok" if error is None else "error",
        "error": None if error is None else error[:500],
        "created_at": utcnow(),
    }


class UsageWriter:
    def __init__(self, db: Database, *, unpriced: Unpriced, written: Written) -> None:
        self.db = db
        self._unpriced_alert = unpriced
        self._written = written
        self._rows: list[dict[str, Any]] = []
        self._holds: list[int] = []  # holds to release with the rows
        self._unpriced: set[str] = set()
        self._spent_by: set[str] = set()  # agents whose spend grew since the last flush
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._rows)

    @property
    def holding(self) -> bool:
        """Holds are waiting to be released: the budget counts them at their worst case."""
        return bool(self._holds)

    def queue(
        self,
        row: dict[str, Any],
        *,
        unpriced: str | None = None,
        hold: int | None = None,
        spent: bool = False,
    ) -> None:
        """Queue a usage row (and the release of `hold`); `unpriced`: the model it was made
        with has no price; `spent`: it cost something."""
        self._rows.append(row)
        if hold is not None:
            self._holds.append(hold)
        if unpriced is not None:
            self._unpriced.add(unpriced)
        if spent and row.get("agent_id"):
            self._spent_by.add(str(row["agent_id"]))
        self._start()

    def release(self, hold: int) -> None:
        """Release `hold` with the next rows: its call recorded nothing (no pair was called)."""
        self._holds.append(hold)
        self._start()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_behind())

    async def flush(self) -> None:
        """Write the queued rows and release the queued holds, in one transaction."""
        async with self._lock:
            while self._rows or self._holds or self._unpriced:
                rows, self._rows = self._rows, []
                holds, self._holds = self._holds, []
                unpriced, self._unpriced = self._unpriced, set()
                try:
                    async with self.db.session() as session:
                        if rows:
                            await spend.record(session, rows)
                        if holds:
                            await budget_holds.release(session, holds, utcnow())
                        for model in sorted(unpriced):
                            await self._unpriced_alert(session, model)
                except BaseException:
                    self._rows[:0] = rows
                    self._holds[:0] = holds
                    self._unpriced |= unpriced
                    raise
        agents, self._spent_by = self._spent_by, set()
        if agents:
            await self._written(agents)

    async def _write_behind(self) -> None:
        # A short wait gathers the rows of concurrent and back-to-back calls into one INSERT.
        await asyncio.sleep(USAGE_WRITE_DELAY)
        try:
            await self.flush()
        except Exception:
            log.exception("writing usage rows failed; %d kept for the next try", self.pending)
