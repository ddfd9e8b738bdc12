"""A month of spend, for /costs and `fleet costs`: the usage rows of each agent (configured
agents without calls included), their total, and the budgets in force now."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config
from bot.views.costs import CostReport
from storage import usage as spend


async def month_report(session: AsyncSession, month: date, config: Config) -> CostReport:
    rows = await spend.month_table(session, month)
    seen = {row.agent for row in rows}
    rows += [
        spend.Row(agent.id, 0, 0, 0, 0, 0, Decimal(0))
        for agent in config.agents
        if agent.id not in seen
    ]
    configured = {agent.id: agent.budget_usd_month for agent in config.agents}
    fleet = config.budget.fleet_usd_month
    total = spend.Row(
        agent="total",
        calls=sum(row.calls for row in rows),
        input=sum(row.input for row in rows),
        output=sum(row.output for row in rows),
        cache_write=sum(row.cache_write for row in rows),
        cache_read=sum(row.cache_read for row in rows),
        usd=sum((row.usd for row in rows), Decimal(0)),
    )
    return CostReport(
        month=month,
        rows=rows,
        total=total,
        budgets=await spend.budgets(session, configured),
        fleet_budget=Decimal(str(fleet)) if fleet is not None else None,
    )
