"""Budget holds: the worst-case cost of each model call in flight, so that calls made at once
(on one node or several) cannot pass a budget together.

A call reserves under a lock (`lock`: the agent's `agent_state` row, or the whole fleet when
a fleet budget is enforced, `SELECT … FOR UPDATE` / an advisory lock on PostgreSQL; SQLite's
write lock, taken by `Database.claim`, serialises everything already), reads `standing`
(the usage rows of the month plus the holds still in force) and adds its `hold`. When the
call returns, `release` drops the hold in the transaction that writes its usage row. A hold
left by a crash stops counting at its `expires_at` and is deleted by a later release.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AgentState, BudgetHold, Usage, utcnow
from storage.transition import upsert

# pg_advisory_xact_lock key of the fleet budget (any constant other code does not use).
_FLEET_KEY = int.from_bytes(
    hashlib.sha256(b"fleetbridge-fleet-budget").digest()[:8], "big", signed=True
)


@dataclass(frozen=True)
class Standing:
    """An agent's budget override and what counts against the month's budgets: the spend
    recorded plus the holds in force, the agent's and (with `fleet`) everyone's."""

    override: Decimal | None
    spent: Decimal
    fleet_spent: Decimal


async def lock(session: AsyncSession, agent_id: str, *, fleet: bool) -> None:
    """Serialise reservations for `agent_id` (every agent's, with `fleet`) until the end of
    the transaction. On SQLite the transaction must come from `Database.claim`."""
    if session.get_bind().dialect.name != "postgresql":
        return
    if fleet:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FLEET_KEY})
        return
    await upsert(
        session,
        AgentState,
        {"agent_id": agent_id, "paused": False, "updated_at": utcnow()},
        keys=["agent_id"],
    )
    await session.execute(
        select(AgentState.agent_id).where(AgentState.agent_id == agent_id).with_for_update()
    )


async def standing(
    session: AsyncSession, agent_id: str, since: datetime, *, fleet: bool, now: datetime
) -> Standing:
    """What a budget check needs, in one statement (it runs before every model call).
    Without `fleet` (no fleet budget) the fleet's spend is not summed and reads 0."""
    in_force = BudgetHold.expires_at > now
    override = (
        select(AgentState.budget_usd_month)
        .where(AgentState.agent_id == agent_id)
        .scalar_subquery()
    )
    spent = (
        select(func.sum(Usage.cost_usd))
        .where(Usage.agent_id == agent_id, Usage.created_at >= since)
        .scalar_subquery()
    )
    held = (
        select(func.sum(BudgetHold.usd))
        .where(BudgetHold.agent_id == agent_id, in_force)
        .scalar_subquery()
    )
    if fleet:
        fleet_spent: ColumnElement[Any] = (
            select(func.sum(Usage.cost_usd)).where(Usage.created_at >= since).scalar_subquery()
        )
        fleet_held: ColumnElement[Any] = (
            select(func.sum(BudgetHold.usd)).where(in_force).scalar_subquery()
        )
    else:
        fleet_spent = fleet_held = literal(None)
    row = (await session.execute(select(override, spent, held, fleet_spent, fleet_held))).one()
    return Standing(
        override=_usd(row[0]) if row[0] is not None else None,
        spent=_usd(row[1]) + _usd(row[2]),
        fleet_spent=_usd(row[3]) + _usd(row[4]),
    )


async def hold(session: AsyncSession, agent_id: str, usd: Decimal, expires_at: datetime) -> int:
    """Count `usd` against `agent_id`'s budgets until released or `expires_at`."""
    found = await session.execute(
        insert(BudgetHold)
        .values(agent_id=agent_id, usd=usd, expires_at=expires_at, created_at=utcnow())
        .returning(BudgetHold.id)
    )
    return int(found.scalar_one())


async def release(session: AsyncSession, ids: Collection[int], now: datetime) -> None:
    """Drop the holds `ids` (their calls' usage rows are written in this transaction) and
    any hold that expired: its call's process died before releasing it."""
    await session.execute(
        delete(BudgetHold).where(or_(BudgetHold.id.in_(list(ids)), BudgetHold.expires_at <= now))
    )


def _usd(value: object) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)
