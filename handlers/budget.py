"""/budget and the "Raise budget" button on a budget stop.

When an agent's month-to-date spend reaches its budget, the gateway pauses it and posts a
stop to `alerts` with a `RaiseBudget` button (see `agents.gateway`). The owner's press raises
the budget by `[budget] raise_step_usd` and resumes the agent, once: the press decides the
stop's approval (kind budget) through `storage.approvals.decide`, like any approval (so
`/approve <id>` works too), and a second or stale press answers who decided it and when.
`/budget <agent> <usd>` sets a budget outright.
"""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation

from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, Message

from agents.org import OrgChart
from bot.args import no_such
from bot.config import Config, Person, Role
from bot.views.budget import RaiseBudget
from bot.views.text import clip, display_name, esc, percent, usd
from handlers.common import person_actor, unknown_agent, usage
from handlers.registry import Routes, command
from storage import approvals, budget_requests
from storage import usage as spend
from storage.approval_kinds import Kinds
from storage.approval_policy import APPROVE, ApprovalPolicy
from storage.db import Database
from storage.statuses import ApprovalStatus

log = logging.getLogger(__name__)
router = Routes(__name__)

MAX_BUDGET = Decimal(1_000_000)
CENT = Decimal("0.01")
OWNER = {"role": Role.owner}


def _configured(config: Config) -> dict[str, float | None]:
    return {agent.id: agent.budget_usd_month for agent in config.agents}


def _share(spent: Decimal, budget: Decimal | None) -> str:
    if budget is None:
        return "no budget"
    if budget == 0:
        return f"{usd(spent)} of a {usd(0)} budget"
    return f"{usd(spent)} of {usd(budget)}, {percent(spent, budget)}"


def _parse_usd(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip().removeprefix("$").replace(",", ""))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0 or value > MAX_BUDGET:
        return None
    return value.quantize(Decimal("0.01"))


@command(router, "budget", Role.owner, usage="<agent> <usd>")
async def set_budget(
    message: Message,
    command: CommandObject,
    db: Database,
    person: Person,
    config: Config,
    org: OrgChart,
    approval_policy: ApprovalPolicy,
) -> None:
    """Set an agent's monthly budget in USD (resumes it if its budget paused it)"""
    line = usage("budget", "<agent> <usd>")
    parts = (command.args or "").split()
    if len(parts) != 2:
        await message.answer(f"{line}\nAgents: {esc(clip(', '.join(org.ids), 1000))}.")
        return
    agent_id = parts[0].lower()
    if agent_id not in org:
        await message.answer(unknown_agent(org, parts[0], line))
        return
    amount = _parse_usd(parts[1])
    if amount is None:
        await message.answer(
            f"{esc(clip(parts[1], 40))} is not an amount of USD from 0 to "
            f"{usd(MAX_BUDGET)}.\n{line}"
        )
        return
    async with db.claim() as session:
        change = await budget_requests.set_budget(
            session, agent_id, amount, policy=approval_policy, by=person_actor(person)
        )
    if change.resumed:
        after = " It was paused by its budget and is resumed."
    elif change.paused_by == spend.BUDGET_ACTOR:
        after = " It stays paused: this month's spend is not under that budget."
    elif change.paused_by is not None:
        by = esc(clip(display_name(change.paused_by, config), 40))
        after = f" It stays paused (by {by}); /resume {esc(agent_id)} when ready."
    else:
        after = ""
    await message.answer(
        f"Monthly budget of <b>{esc(agent_id)}</b> set to {usd(amount)} "
        f"(this month: {_share(change.spent, change.budget)}).{after}"
    )


# The stop is edited through the outbox, never by the press: a press on a stop whose button
# is gone answers how the request was settled.
@router.callback_query(RaiseBudget.filter(), flags={**OWNER, "settled_press": True})
async def press_raise(
    callback: CallbackQuery,
    callback_data: RaiseBudget,
    db: Database,
    person: Person,
    approval_policy: ApprovalPolicy,
    approval_kinds: Kinds,
) -> None:
    # The press is the approval's decision (storage.approvals.decide runs the budget effect,
    # which also edits the stop through the outbox, however the request is settled).
    async with db.claim() as session:
        decided = await approvals.decide(
            session,
            callback_data.approval,
            policy=approval_policy,
            kinds=approval_kinds,
            person_id=person.telegram_id,
            person_name=person.name,
            vote=APPROVE,
            kind="budget",
        )
        found = decided.approval
        if isinstance(decided.effect, budget_requests.BudgetChange):
            change = decided.effect
        else:
            agent = found.payload.get("agent") if found and found.kind == "budget" else None
            change = budget_requests.BudgetChange(False, agent, found if agent else None)
        approval = change.approval
        said = budget_requests.settlement(approval, approval_policy, change) if approval else ""
    if approval is None:
        await callback.answer(no_such("budget request", callback_data.approval), show_alert=True)
    elif approval.status == ApprovalStatus.PENDING:  # refused, not settled: say why
        await callback.answer(clip(decided.refusal, 200), show_alert=True)
    elif change.won:
        await callback.answer(f"Budget of {change.agent_id} raised to {usd(change.budget or 0)}")
    else:
        await callback.answer(clip(f"Already settled: {said}", 200), show_alert=True)
