"""Budget requests decided: the `budget` approval's effect (`BudgetKind`: raise the agent's
budget by the stop's step and resume it), /budget setting a budget outright (which settles a
pending request), and the budget stop in `alerts` edited to say how its request was settled.

The request itself (the stop's pending approval) is made by the gateway through
storage.usage (`request_raise`); this is the deciding side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import bot.views.text as view
from bot.views import budget as budget_view
from storage import agents as agent_state
from storage import approvals, outbox
from storage.approval_kinds import SYSTEM, Outcome
from storage.approval_policy import ApprovalPolicy
from storage.db import touch
from storage.models import AgentState, Approval, Outbox, utcnow
from storage.statuses import ApprovalStatus
from storage.transition import upsert
from storage.usage import (
    BUDGET_ACTOR,
    BUDGET_TOPIC,
    ZERO,
    effective_budget,
    pending_raise,
    spend_this_month,
    usd_of,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BudgetChange(Outcome):
    """The outcome of /budget or a "Raise budget" press.

    `won` is False when the approval was decided already (`approval` says by whom and when)
    or does not exist (`approval` is None)."""

    won: bool
    agent_id: str | None
    approval: Approval | None = None
    budget: Decimal | None = None  # the agent's budget now
    spent: Decimal = ZERO  # this month, so far
    resumed: bool = False
    paused_by: str | None = None  # who paused the agent, if it is still paused


@dataclass(frozen=True)
class BudgetKind:
    """The `budget` approval's effect. Approved: raise the agent's budget by the step and
    resume it. Rejected or expired: the stop says so and loses its button; the agent stays
    paused. `configured`: each agent's budget in the config."""

    configured: Mapping[str, float | None]
    name: str = "budget"

    async def settled(
        self, session: AsyncSession, approval: Approval, policy: ApprovalPolicy
    ) -> Outcome | None:
        if approval.status != ApprovalStatus.APPROVED:
            await close_stop(session, approval, policy)
            return None
        return await apply_raise(
            session,
            approval,
            policy,
            by=approval.decided_by or SYSTEM,
            configured=self.configured,
            now=approval.decided_at or utcnow(),
        )


async def apply_raise(
    session: AsyncSession,
    approval: Approval,
    policy: ApprovalPolicy,
    *,
    by: str,
    configured: Mapping[str, float | None],
    now: datetime,
) -> BudgetChange:
    """The effect of an approved budget approval (`BudgetKind`): raise the agent's budget by
    the approval's step, and resume the agent if its budget paused it and it is now under the
    new budget."""
    payload = approval.payload
    agent_id = str(payload["agent"])
    step = Decimal(str(payload["step"]))
    base = effective_budget(None, configured.get(agent_id)) or ZERO
    await upsert(
        session,
        AgentState,
        {
            "agent_id": agent_id,
            "paused": False,
            "budget_usd_month": base + step,
            "updated_at": now,
        },
        keys=["agent_id"],
        update_columns={
            "budget_usd_month": func.coalesce(AgentState.budget_usd_month, base) + step
        },
    )
    log.info("budget of %s raised by $%s by %s", agent_id, step, by)
    change = await _settle(session, agent_id, by, approval, now)
    await close_stop(session, approval, policy, change)
    return change


async def set_budget(
    session: AsyncSession,
    agent_id: str,
    usd: Decimal,
    *,
    policy: ApprovalPolicy,
    by: str,
    now: datetime | None = None,
) -> BudgetChange:
    """Set an agent's monthly budget (overriding the config's). Pending raise requests for it
    are settled (cancelled, naming who set the budget); the agent is resumed if its budget
    paused it and it is now under the new budget."""
    now = now or utcnow()
    await upsert(
        session,
        AgentState,
        {"agent_id": agent_id, "paused": False, "budget_usd_month": usd, "updated_at": now},
        keys=["agent_id"],
        update_columns={"budget_usd_month": usd},
    )
    stale = await pending_raise(session, agent_id)
    if stale is not None and await approvals.cancel(
        session,
        stale.id,
        policy=policy,
        by=by,
        reason=f"budget set to {view.usd(usd)} with /budget",
        now=now,
    ):
        await close_stop(session, stale, policy)
    log.info("budget of %s set to $%s by %s", agent_id, usd, by)
    return await _settle(session, agent_id, by, None, now)


async def _settle(
    session: AsyncSession, agent_id: str, by: str, approval: Approval | None, now: datetime
) -> BudgetChange:
    # The gateway keeps budgets in memory between calls; this tells it to read them again.
    touch(session, BUDGET_TOPIC)
    state = await agent_state.state(session, agent_id)
    budget = (
        usd_of(state.budget_usd_month) if state and state.budget_usd_month is not None else None
    )
    spent = await spend_this_month(session, agent_id, now)
    resumed = False
    if (
        state is not None
        and state.paused
        and state.paused_by == BUDGET_ACTOR
        and budget is not None
        and spent < budget
    ):
        resumed = (await agent_state.resume(session, agent_id, by=by)).won
    paused_by = state.paused_by if state is not None and state.paused and not resumed else None
    return BudgetChange(True, agent_id, approval, budget, spent, resumed, paused_by)


def settlement(
    approval: Approval, policy: ApprovalPolicy, change: BudgetChange | None = None
) -> str:
    """How a budget request was settled, as plain text (`bot.views.budget.settlement`);
    `change` is the raise this settlement made, if it made one."""
    raised_to = change.budget if change is not None and change.won else None
    return budget_view.settlement(
        approval, policy, raised_to, change is not None and change.resumed
    )


async def close_stop(
    session: AsyncSession,
    approval: Approval,
    policy: ApprovalPolicy,
    change: BudgetChange | None = None,
) -> None:
    """Edit the budget stop in `alerts` to say how its request was settled, without its
    button, however it was settled (the button, /approve, /reject or /budget)."""
    key = f"budget-stop:{approval.id}"
    found = await session.execute(select(Outbox).where(Outbox.dedup_key == key))
    stop = found.scalar_one_or_none()
    if stop is None:
        return
    said = settlement(approval, policy, change)
    await outbox.enqueue(
        session,
        outbox.Destination(stop.chat_id, stop.topic, stop.feed),
        budget_view.settled_stop(stop.text, approval, said),
        dedup_key=f"{key}:settled",
        edit_of=key,
    )
