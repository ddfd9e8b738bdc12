"""What the fleet spent on models, and the monthly budgets that bound it.

Every query about usage rows lives here: spend since a moment (per agent, or the fleet), the
month table behind /costs and `fleet costs`, and spend per day for the chart. Months are
calendar months in UTC, like the budgets they are compared with.

A budget is the agent's `AgentState.budget_usd_month` when set (by /budget or a "Raise budget"
press), else its `budget_usd_month` from the config. A raise is decided once: the stop posts a
pending approval of kind "budget" (`request_raise`); `storage.approvals.decide` approves it
with a conditional update and then runs its effect (storage.budget_requests) in the same
transaction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Date, cast, func, select
from sqlalchemy import insert as sa_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage import approvals
from storage.approval_policy import ApprovalPolicy
from storage.models import AgentState, Approval, Usage, utcnow
from storage.statuses import ApprovalStatus

log = logging.getLogger(__name__)

BUDGET_ACTOR = "system:budget"  # who pauses an agent whose budget ran out
BUDGET_TOPIC = "budget"  # `Database.on_commit` topic of transactions that change a budget
ZERO = Decimal(0)
CENT = Decimal("0.01")
# A budget request names its approvers, has no deadline and posts no message of its own (the
# stop is its message): nothing of the approval policy applies to asking for it.
_REQUEST_POLICY = ApprovalPolicy()


# -- months ----------------------------------------------------------------------------------


def month_start(now: datetime | None = None) -> datetime:
    """Midnight of the first day of the month of `now` (default: the current one), in UTC."""
    now = (now or utcnow()).astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_of(now: datetime | None = None) -> date:
    """The first day of the month of `now` (default: the current one), in UTC."""
    return month_start(now).date()


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[start, end) of the calendar month that contains `month`, in UTC."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


# Months a fleet can have spend in; the bounds keep date arithmetic (the month after) valid.
FIRST_MONTH = date(2000, 1, 1)
LAST_MONTH = date(2999, 12, 1)


class MonthError(ValueError):
    """Not a month, or (`out_of_range`) a month outside FIRST_MONTH..LAST_MONTH."""

    def __init__(self, message: str, *, out_of_range: bool = False) -> None:
        super().__init__(message)
        self.out_of_range = out_of_range


def parse_month(text: str) -> date:
    """ "2026-11" as the first day of that month; MonthError for anything else."""
    match = re.fullmatch(r"([0-9]{4})-([0-9]{2})", text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise MonthError(f'"{text}" is not a month like 2026-11')
    month = date(int(match.group(1)), int(match.group(2)), 1)
    if not FIRST_MONTH <= month <= LAST_MONTH:
        raise MonthError(
            f'"{text}" is outside the months a fleet has ({FIRST_MONTH:%Y-%m} to '
            f"{LAST_MONTH:%Y-%m})",
            out_of_range=True,
        )
    return month


def month_days(month: date) -> list[date]:
    start, end = month_bounds(month)
    return [start.date() + timedelta(days=i) for i in range((end - start).days)]


# -- spend -----------------------------------------------------------------------------------


def usd_of(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else ZERO


async def spend_since(
    session: AsyncSession,
    since: datetime,
    agent_ids: Iterable[str] | None = None,
    *,
    until: datetime | None = None,
) -> dict[str, Decimal]:
    """USD per agent for calls made at or after `since` (and before `until`). Agents without
    calls are missing from the result."""
    stmt = (
        select(Usage.agent_id, func.sum(Usage.cost_usd))
        .where(Usage.created_at >= since, Usage.agent_id.is_not(None))
        .group_by(Usage.agent_id)
    )
    if until is not None:
        stmt = stmt.where(Usage.created_at < until)
    if agent_ids is not None:
        stmt = stmt.where(Usage.agent_id.in_(list(agent_ids)))
    return {str(agent): usd_of(total) for agent, total in (await session.execute(stmt)).all()}


async def fleet_spend_since(session: AsyncSession, since: datetime) -> Decimal:
    """USD for every call made at or after `since`, whoever made it."""
    stmt = select(func.sum(Usage.cost_usd)).where(Usage.created_at >= since)
    return usd_of((await session.execute(stmt)).scalar_one_or_none())


async def spend_this_month(
    session: AsyncSession, agent_id: str, now: datetime | None = None
) -> Decimal:
    """USD spent on model calls by `agent_id` since the first of the month (UTC)."""
    found = await spend_since(session, month_start(now), [agent_id])
    return found.get(agent_id, ZERO)


@dataclass(frozen=True)
class Row:
    """One agent's month: calls that answered, tokens by kind, and their cost."""

    agent: str
    calls: int
    input: int
    output: int
    cache_write: int
    cache_read: int
    usd: Decimal

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_write + self.cache_read


NO_AGENT = "(none)"  # usage rows not made for an agent


async def month_table(session: AsyncSession, month: date) -> list[Row]:
    """One row per agent that called a model in `month`, most expensive first. Calls that
    failed (429, 5xx ...) cost nothing and are not counted."""
    start, end = month_bounds(month)
    stmt = (
        select(
            Usage.agent_id,
            func.count(),
            func.sum(Usage.input_tokens),
            func.sum(Usage.output_tokens),
            func.sum(Usage.cache_write_tokens),
            func.sum(Usage.cache_read_tokens),
            func.sum(Usage.cost_usd),
        )
        .where(Usage.created_at >= start, Usage.created_at < end, Usage.status == "ok")
        .group_by(Usage.agent_id)
    )
    rows = [
        Row(
            agent=agent or NO_AGENT,
            calls=int(calls),
            input=int(inp or 0),
            output=int(out or 0),
            cache_write=int(write or 0),
            cache_read=int(read or 0),
            usd=usd_of(usd),
        )
        for agent, calls, inp, out, write, read, usd in (await session.execute(stmt)).all()
    ]
    return sorted(rows, key=lambda row: (-row.usd, row.agent))


async def daily_spend(session: AsyncSession, month: date) -> dict[str, dict[date, Decimal]]:
    """USD per agent per UTC day of `month`; days without spend are missing."""
    start, end = month_bounds(month)
    day: ColumnElement[Any]
    if session.get_bind().dialect.name == "postgresql":
        day = cast(func.timezone("UTC", Usage.created_at), Date)
    else:  # SQLite holds UTC as "YYYY-MM-DD HH:MM:SS.ffffff"
        day = func.date(Usage.created_at)
    stmt = (
        select(Usage.agent_id, day, func.sum(Usage.cost_usd))
        .where(Usage.created_at >= start, Usage.created_at < end)
        .group_by(Usage.agent_id, day)
    )
    out: dict[str, dict[date, Decimal]] = {}
    for agent, when, usd in (await session.execute(stmt)).all():
        spent = usd_of(usd)
        if spent <= 0:
            continue
        moment = when if isinstance(when, date) else date.fromisoformat(str(when))
        out.setdefault(agent or NO_AGENT, {})[moment] = spent
    return out


# -- budgets ---------------------------------------------------------------------------------


async def record(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Write usage rows (one per model call), in one INSERT."""
    await session.execute(sa_insert(Usage), rows)


def effective_budget(override: Decimal | None, configured: float | None) -> Decimal | None:
    """The budget in force: the database's override, else the config's (None: no budget)."""
    if override is not None:
        return Decimal(str(override))
    return Decimal(str(configured)) if configured is not None else None


async def budget_overrides(session: AsyncSession, agent_ids: Iterable[str]) -> dict[str, Decimal]:
    """Budgets set in the database (/budget, raises), by agent; others use the config's."""
    stmt = select(AgentState.agent_id, AgentState.budget_usd_month).where(
        AgentState.agent_id.in_(list(agent_ids)), AgentState.budget_usd_month.is_not(None)
    )
    return {agent: usd_of(usd) for agent, usd in (await session.execute(stmt)).all()}


async def budgets(
    session: AsyncSession, configured: Mapping[str, float | None]
) -> dict[str, Decimal | None]:
    """The budget in force for each agent of `configured` (agent id -> config budget)."""
    overrides = await budget_overrides(session, configured)
    return {
        agent: effective_budget(overrides.get(agent), usd) for agent, usd in configured.items()
    }


async def pending_raise(session: AsyncSession, agent_id: str) -> Approval | None:
    """The agent's budget approval still waiting for a press, if any."""
    found = await session.execute(
        select(Approval)
        .where(Approval.kind == "budget", Approval.status == ApprovalStatus.PENDING)
        .order_by(Approval.id)
    )
    return next((a for a in found.scalars() if a.payload.get("agent") == agent_id), None)


async def request_raise(
    session: AsyncSession,
    agent_id: str,
    *,
    month: date,
    budget: Decimal,
    spent: Decimal,
    step: Decimal,
) -> tuple[Approval, bool]:
    """The pending approval behind a budget stop's "Raise budget" button, and whether it is
    new. An agent has at most one pending: a second stop before the press reuses it."""
    existing = await pending_raise(session, agent_id)
    if existing is not None:
        return existing, False
    approval = await approvals.request(
        session,
        policy=_REQUEST_POLICY,
        kind="budget",
        payload={
            "agent": agent_id,
            "month": f"{month:%Y-%m}",
            "budget": str(budget),
            "spent": str(spent),
            "step": str(step),
        },
        requested_by=BUDGET_ACTOR,
        approvers={"role": "owner"},  # raising spend is the owner's call
        announce=False,  # the budget stop in `alerts` is its message
    )
    return approval, True
