"""The budget ledger: before a model call, its worst-case cost is reserved against the
agent's (and the fleet's) month, under a lock, so that calls made at once on any number of
nodes cannot pass a budget together; the real cost replaces the hold when the call's usage
row is written (agents.usage_writer).

A call is refused when what counts against the budget (the spend recorded plus the holds of
the calls in flight) has reached it: the hold of a call counts against the calls after it,
not against itself, so one call can cross the line (as with one process before), never two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

import bot.views.models as view
from agents.model_alerts import ModelAlerts
from agents.model_errors import BudgetExceeded
from bot.config import AgentConfig, Config
from bot.views.budget import RaiseBudget
from bot.views.text import percent
from storage import agents as agent_state
from storage import budget_holds
from storage import usage as spend
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

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


class BudgetStops:
    """What a budget says to people: the 80% warning (once per budget and month), and the
    stop at 100% (the agent paused, an alert with a "Raise budget" button, the hub told),
    raising BudgetExceeded so the call is not made."""

    def __init__(self, config: Config, db: Database, ledger: Ledger, alerts: ModelAlerts) -> None:
        self.config = config
        self.db = db
        self.ledger = ledger
        self.alerts = alerts
        self._warned: set[str] = set()  # budget warnings queued by this process

    async def judge(self, agent: AgentConfig, standing: Standing) -> None:
        """Refuse the call (BudgetExceeded) when the agent's or the fleet's month is spent;
        warn `alerts` once at 80%."""
        if standing.over and standing.limit is not None:
            await self._stop(agent, standing.month, standing.spent, standing.limit)
        if standing.fleet_over and standing.fleet_limit is not None:
            await self._stop_fleet(
                agent, standing.month, standing.fleet_spent, standing.fleet_limit
            )
        if standing.warn and standing.limit is not None:
            await self._warn(agent.id, standing.month, standing.spent, standing.limit)
        if standing.fleet_warn and standing.fleet_limit is not None:
            await self._warn(None, standing.month, standing.fleet_spent, standing.fleet_limit)

    async def warn_crossed(self, agent_ids: set[str]) -> None:
        """The 80% warning for spend just recorded: a run whose last call crosses the line
        may be followed by no call for days, so the check before a call is not enough."""
        fleet_warned = False
        for agent_id in sorted(agent_ids):
            agent = next((a for a in self.config.agents if a.id == agent_id), None)
            if agent is None:
                continue
            standing = await self.ledger.standing(agent)
            if standing.warn and standing.limit is not None:
                await self._warn(agent_id, standing.month, standing.spent, standing.limit)
            if standing.fleet_warn and standing.fleet_limit is not None and not fleet_warned:
                fleet_warned = True
                await self._warn(None, standing.month, standing.fleet_spent, standing.fleet_limit)

    async def _warn(
        self, agent_id: str | None, month: date, spent: Decimal, limit: Decimal
    ) -> None:
        key = f"budget-warn:{agent_id or '*fleet'}:{month:%Y-%m}:{limit:.2f}"
        if key in self._warned:
            return
        share = percent(spent, limit) if limit else "all"
        async with self.db.session() as session:
            await self.alerts.alert(
                session, view.budget_warning(agent_id, share, month, spent, limit), key
            )
        self._warned.add(key)

    async def _stop(
        self, agent: AgentConfig, month: date, spent: Decimal, limit: Decimal
    ) -> NoReturn:
        step = Decimal(str(self.config.budget.raise_step_usd))
        reason = view.budget_reason(month, spent, limit)
        async with self.db.claim() as session:
            # Nodes stopping the agent at once make one request (and one stop) between them.
            await budget_holds.lock(session, agent.id, fleet=False)
            await agent_state.pause(session, agent.id, by=spend.BUDGET_ACTOR, reason=reason)
            approval, new = await spend.request_raise(
                session, agent.id, month=month, budget=limit, spent=spent, step=step
            )
            if new:
                button = {
                    "text": view.budget_button(step),
                    "callback_data": RaiseBudget(approval=approval.id).pack(),
                }
                await self.alerts.alert(
                    session,
                    view.budget_stop(agent.id, month, spent, limit),
                    f"budget-stop:{approval.id}",
                    buttons=[[button]],
                )
                await self.alerts.tell_hub(
                    session,
                    agent.id,
                    view.budget_stop_notice(agent.id, reason),
                    f"oversight:budget-stop:{approval.id}",
                )
        log.warning("%s: %s; paused", agent.id, reason)
        raise BudgetExceeded(f"{reason}; paused until the budget is raised", alerted=True)

    async def _stop_fleet(
        self, agent: AgentConfig, month: date, spent: Decimal, limit: Decimal
    ) -> NoReturn:
        reason = view.budget_reason(month, spent, limit, fleet=True)
        async with self.db.claim() as session:
            await agent_state.pause(session, agent.id, by=spend.BUDGET_ACTOR, reason=reason)
            await self.alerts.alert(
                session,
                view.fleet_stop(month, spent, limit),
                f"budget-stop:*fleet:{month:%Y-%m}:{limit:.2f}",
            )
            await self.alerts.tell_hub(
                session,
                agent.id,
                view.fleet_stop_notice(reason),
                f"oversight:budget-stop:*fleet:{month:%Y-%m}:{limit:.2f}",
            )
        log.warning("%s: %s; paused", agent.id, reason)
        raise BudgetExceeded(f"{reason}; paused", alerted=True)
