"""Budgets as people see them: the "Raise budget" button on a budget stop, shares of a
budget, and how a budget request was settled (the line the stop is edited to end with)."""

from __future__ import annotations

from decimal import Decimal
from html import escape

from aiogram.filters.callback_data import CallbackData

from bot.views.approvals import Display, moment, outcome
from bot.views.text import usd
from storage.models import Approval, DbId
from storage.statuses import ApprovalStatus


class RaiseBudget(CallbackData, prefix="bud"):
    """The button on a budget stop: approve budget approval `approval` (raise by its step)."""

    approval: DbId


def settlement(
    approval: Approval,
    display: Display,
    raised_to: Decimal | None = None,
    resumed: bool = False,
) -> str:
    """How a budget request was settled, as plain text: "raised to $11.00 by Ana at 14:02;
    coder resumed". `raised_to`: the budget the raise this settlement made left (None: it
    made none), `resumed` whether it resumed the agent."""
    by = display.name(approval.decided_by)
    at = moment(approval.decided_at, display)
    agent = str(approval.payload.get("agent", "?"))
    if approval.status == ApprovalStatus.APPROVED:
        if raised_to is not None:
            return (
                f"raised to {usd(raised_to)} by {by} at {at}; "
                f"{agent} {'resumed' if resumed else 'not resumed'}"
            )
        return f"raised by {usd(approval.payload.get('step', 0))} by {by} at {at}"
    if approval.status == ApprovalStatus.CANCELLED:
        reason = f" ({approval.reason})" if approval.reason else ""
        return f"settled by {by} at {at}{reason}"
    return outcome(approval, display)


def settled_stop(stop: str, approval: Approval, said: str) -> str:
    """The budget stop `stop` (its HTML) ending with how its request was settled (`said`)."""
    marks: dict[str, str] = {ApprovalStatus.REJECTED: "❌", ApprovalStatus.EXPIRED: "⌛"}
    mark = marks.get(approval.status, "✅")
    return f"{stop}\n\n{mark} {escape(said[:1].upper() + said[1:])}."
