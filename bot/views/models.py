"""What the model gateway tells people and the hub: an unpriced model, a rejected key, a
budget warning, a budget stop (an agent's or the fleet's). Pure functions of their figures;
the gateway queues them in the outbox."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from bot.views.text import esc, usd


def unpriced(model: str) -> str:
    return (
        f"💲 No price for model <b>{esc(model)}</b>: its calls are recorded at $0 "
        "and count against no budget. Add its USD per million tokens to the config: "
        f'<code>[pricing."{esc(model)}"]</code> with <code>input</code> and '
        "<code>output</code>."
    )


def key_rejected(profile: str, status: int) -> str:
    return (
        f"🔑 Anthropic rejected the key for profile <b>{esc(profile)}</b> ({status}). "
        "It is not used again until its key changes in the config (then restart); "
        "agents go on with their other profiles, if any."
    )


def budget_warning(
    agent_id: str | None, share: str, month: date, spent: Decimal, limit: Decimal
) -> str:
    """`share`: the part of the budget used, as people read it ("83%")."""
    who = f"<b>{esc(agent_id)}</b> has" if agent_id else "The fleet has"
    return (
        f"⚠️ {who} used {share} of its monthly budget: {usd(spent)} of {usd(limit)} in "
        f"{month:%B %Y}. At 100% it is paused."
    )


def budget_reason(month: date, spent: Decimal, limit: Decimal, *, fleet: bool = False) -> str:
    """Why a call was refused, as the run's outcome and the hub's notice say it."""
    whose = "fleet" if fleet else "monthly"
    return f"{whose} budget used up: {usd(spent)} of {usd(limit)} in {month:%Y-%m}"


def budget_button(step: Decimal) -> str:
    return f"Raise budget by {usd(step)}"


def budget_stop(agent_id: str, month: date, spent: Decimal, limit: Decimal) -> str:
    return (
        f"🛑 <b>{esc(agent_id)}</b> used up its monthly budget: {usd(spent)} of "
        f"{usd(limit)} in {month:%B %Y}. It is paused and calls no model until "
        f"the budget is raised (owner: the button, or /budget {esc(agent_id)} "
        "&lt;usd&gt;)."
    )


def budget_stop_notice(agent_id: str, reason: str) -> str:
    return (
        f"{agent_id} is paused: {reason}. Do not assign it work until an owner raises its budget."
    )


def fleet_stop(month: date, spent: Decimal, limit: Decimal) -> str:
    return (
        f"🛑 The fleet used up its monthly budget: {usd(spent)} of {usd(limit)} in "
        f"{month:%B %Y}. Each agent is paused when it next calls a model. To go on, "
        "raise <code>fleet_usd_month</code> under <code>[budget]</code> in the config, "
        "restart, and /resume the agents."
    )


def fleet_stop_notice(reason: str) -> str:
    return (
        f"The fleet is paused agent by agent: {reason}. No agent can call a model "
        "until the fleet budget is raised."
    )
