"""The budget ledger: before a model call, its worst-case cost is reserved against the
agent's (and the fleet's) month, under a lock, so that calls made at once on any number of
nodes cannot pass a budget together; the real cost replaces the hold when the call's usage
row is written (agents.usage_writer).

A call is refused when what counts against the budget (the spend recorded plus the holds of
the calls in flight) has reached it: the hold of a call counts against the calls after it,
not against itself, so one call can cross the line (as with one process before), never two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AgentConfig, Config
from storage import budget_holds
from storage import usage as spend
from storage.db import Database
from storage.models import utcnow

WARN_AT = Decimal("0.8")  # share of a budget at which `alerts` is warned


@dataclass(frozen=True)
class Standing:
    """An agent's budget and the fleet's, and what counts against each, this month."""

    month: date
    limit: Decimal | None
    spent: Decimal
    fleet_limit: Decimal | None
    fleet_spent: Decimal
    hold: int | None = None  # the hold reserved for the call, if any

    @property
    def over(self) -> bool:
        return self.limit is not None and self.spent >= self.limit

    @property
    def fleet_over(self) -> bool:
        return self.fleet_limit is not None and self.fleet_spent >= self.fleet_limit

    @property
    def warn(self) -> bool:
        return self.limit is not None and self.spent >= self.limit * WARN_AT

    @property
    def fleet_warn(self) -> bool:
        return self.fleet_limit is not None and self.fleet_spent >= self.fleet_limit * WARN_AT


class Ledger:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db

    def _fleet_limit(self) -> Decimal | None:
        limit = self.config.budget.fleet_usd_month
        return Decimal(str(limit)) if limit is not None else None

    async def reserve(
        self, session: AsyncSession, agent: AgentConfig, worst: Decimal, ttl: timedelta
    ) -> Standing:
        """Reserve `worst` USD for a call of `agent` for `ttl`, unless a budget is used up
        (then `over` or `fleet_over` says which, and nothing is reserved). `session` must
        come from `Database.claim`: the lock is held until it commits."""
        fleet_limit = self._fleet_limit()
        now = utcnow()
        fleet = fleet_limit is not None
        await budget_holds.lock(session, agent.id, fleet=fleet)
        found = await self.read(session, agent)
        if found.over or found.fleet_over or worst <= 0:
            return found
        if found.limit is None and not fleet:
            return found  # no budget to keep: nothing to reserve
        hold = await budget_holds.hold(session, agent.id, worst, now + ttl)
        return Standing(
            found.month, found.limit, found.spent, found.fleet_limit, found.fleet_spent, hold
        )

    async def standing(self, agent: AgentConfig) -> Standing:
        """What counts against the agent's budget and the fleet's now (no lock)."""
        async with self.db.session() as session:
            return await self.read(session, agent)

    async def read(self, session: AsyncSession, agent: AgentConfig) -> Standing:
        """What counts against the agent's budget and the fleet's, as `session` sees it."""
        fleet_limit = self._fleet_limit()
        now = utcnow()
        since = spend.month_start(now)
        seen = await budget_holds.standing(
            session, agent.id, since, fleet=fleet_limit is not None, now=now
        )
        limit = spend.effective_budget(seen.override, agent.budget_usd_month)
        return Standing(since.date(), limit, seen.spent, fleet_limit, seen.fleet_spent)
