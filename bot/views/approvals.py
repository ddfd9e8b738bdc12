"""Approvals as people see them: the card posted to the approvals feed (text and buttons),
the reminder and escalation notices, the outcome told to an agent, the reject prompt, and
the callback data of every approval button.

Pure functions of the rows: who a person is and the time zone come from a `Display` (the
approval policy is one), so nothing here reads the database or knows who may decide.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, tzinfo
from html import escape
from typing import Protocol

from aiogram.filters.callback_data import CallbackData

from bot.views.text import one_line, usd, when
from storage.models import Approval, ApprovalVote, DbId
from storage.statuses import ApprovalStatus

Button = dict[str, str]  # storage.outbox.Button: {"text": ..., "callback_data": ...}

# The prompt names the presser (a mention, so that a selective ForceReply opens their reply
# field only) and the approval, for people; the reply finds its approval by the recorded
# prompt (storage.approvals.prompted), the text only spares a lookup for every other reply.
REJECT_PROMPT = "{who}: reason for rejecting approval #{id}? Reply to this message."
REJECT_PROMPT_PATTERN = re.compile(
    r": reason for rejecting approval #(\d{1,19})\? Reply to this message\.$"
)


class ApprovalCb(CallbackData, prefix="ap"):
    """An approval button: `a` is y (approve), n (reject), d (details) or w (always allow, exec
    approvals only: handlers/exec.py); `id` the approval."""

    a: str
    id: DbId


class Display(Protocol):
    """What showing an approval needs: the zone times are shown in, and names of actors."""

    @property
    def tz(self) -> tzinfo: ...

    def name(self, actor: str | None) -> str: ...


def summary(approval: Approval) -> str:
    payload = approval.payload
    if approval.kind == "deploy":
        ref = f" at {payload['ref']}" if payload.get("ref") else ""
        return f"deploy {payload.get('target', '?')}{ref}"
    if approval.kind == "budget":
        try:
            by = usd(payload.get("step", "?"))
        except (ArithmeticError, ValueError):
            by = "?"
        return f"raise the budget of {payload.get('agent', '?')} by {by}"
    return str(payload.get("summary") or payload.get("title") or approval.kind)


def moment(at: datetime | None, display: Display, now: datetime | None = None) -> str:
    """`bot.views.text.when` in the configured zone ("14:02 CET" today, else "24 Nov 14:02")."""
    return when(at, display.tz, now) if at is not None else "an unknown time"


def outcome(approval: Approval, display: Display) -> str:
    """How it was settled: "approved by Ana at 14:02", "rejected by Ben at 14:05: too risky"."""
    at = moment(approval.decided_at, display)
    if approval.status == ApprovalStatus.EXPIRED:
        return f"expired at {at} with no decision"
    text = f"{approval.status} by {display.name(approval.decided_by)} at {at}"
    return f"{text}: {approval.reason}" if approval.reason else text


def told(approval: Approval, display: Display) -> str:
    """The outcome as the requesting agent reads it (a task comment or an inbox message)."""
    return f"Approval #{approval.id} ({approval.kind}: {summary(approval)}) " + outcome(
        approval, display
    )


def settled(approval: Approval, display: Display, now: datetime) -> str:
    """Why a press on an approval that is no longer open changes nothing."""
    if approval.status == ApprovalStatus.PENDING:
        return f"approval #{approval.id} expired at {moment(approval.deadline, display, now)}"
    if approval.status == ApprovalStatus.EXPIRED:
        return f"approval #{approval.id} expired at {moment(approval.decided_at, display, now)}"
    by = display.name(approval.decided_by)
    return f"already {approval.status} by {by} at {moment(approval.decided_at, display, now)}"


def who_decides(approval: Approval) -> str:
    people = approval.approvers.get("people")
    if people:
        return ", ".join(str(p) for p in people)
    role = approval.approvers.get("role", "owner")
    return "an owner" if role == "owner" else "an operator or owner"


def render(approval: Approval, display: Display, approving: Sequence[ApprovalVote] = ()) -> str:
    """The approval message (HTML): what is asked, by whom, the payload, who decides.
    `approving`: the approve votes that count toward its quorum so far."""
    payload = approval.payload
    pending = approval.status == ApprovalStatus.PENDING
    lines = [
        f"🟡 <b>Approval #{approval.id}</b> · {escape(approval.kind)}",
        f"<b>{escape(summary(approval))}</b>",
        f"Requested by {escape(display.name(approval.requested_by))}"
        + (f" for task #{approval.task_id}" if approval.task_id else ""),
    ]
    if approval.kind == "deploy" and payload.get("command"):
        lines.append(f"Command: <code>{escape(str(payload['command'])[:300])}</code>")
    details = str(payload.get("details") or "")
    if approval.kind == "publish" and payload.get("text"):
        # The text itself is what is decided: shown whole up to 3,000 characters.
        shown = str(payload["text"])
        lines.append(f"<blockquote>{escape(shown)}</blockquote>")
        if len(details) > len(shown):
            lines.append(f"… {len(details) - len(shown)} more characters: press Details")
    elif details:
        lines.append(escape(details[:1500]))
    if pending:
        # Who decides and by when matter only while it is open: a decided card shows the
        # decision instead.
        needs = who_decides(approval)
        if approval.required > 1:
            needs += f", {approval.required} different people"
        lines.append(f"Decides: {escape(needs)}")
        if approval.deadline is not None:
            lines.append(f"Deadline: {moment(approval.deadline, display)}")
    if approving and pending:
        names = ", ".join(display.name(f"person:{v.person_id}") for v in approving)
        lines.append(f"Approved so far ({len(approving)} of {approval.required}): {escape(names)}")
    if approval.escalated_at is not None and pending:
        lines.append(f"⏫ Escalated at {moment(approval.escalated_at, display)}")
    if not pending:
        marks: dict[str, str] = {
            ApprovalStatus.APPROVED: "✅",
            ApprovalStatus.REJECTED: "❌",
            ApprovalStatus.EXPIRED: "⌛",
        }
        mark = marks.get(approval.status, "▪️")
        lines[0] = lines[0].replace("🟡", mark, 1)
        said = outcome(approval, display)
        lines.append(f"{mark} {escape(said[:1].upper() + said[1:])}")
    return "\n".join(lines)


def buttons(approval: Approval) -> list[list[Button]]:
    if approval.kind == "exec":
        # Always allow also adds an exec rule for this agent and this exact argv.
        return [
            [
                {"text": "Allow once", "callback_data": ApprovalCb(a="y", id=approval.id).pack()},
                {
                    "text": "Always allow",
                    "callback_data": ApprovalCb(a="w", id=approval.id).pack(),
                },
                {"text": "Deny", "callback_data": ApprovalCb(a="n", id=approval.id).pack()},
            ]
        ]
    return [
        [
            {"text": "Approve", "callback_data": ApprovalCb(a="y", id=approval.id).pack()},
            {"text": "Reject", "callback_data": ApprovalCb(a="n", id=approval.id).pack()},
            {"text": "Details", "callback_data": ApprovalCb(a="d", id=approval.id).pack()},
        ]
    ]


def line(approval: Approval, display: Display) -> str:
    """One pending approval in /approvals (HTML)."""
    deadline = f", deadline {moment(approval.deadline, display)}" if approval.deadline else ""
    return (
        f"#{approval.id} {escape(approval.kind)}: {escape(one_line(summary(approval), 120))}"
        f" ({escape(display.name(approval.requested_by))}{deadline})"
    )


def pending_buttons(approvals: Sequence[Approval]) -> list[list[Button]]:
    """Approve, reject and details of each approval /approvals lists, one row each."""
    return [
        [
            {"text": f"✅ #{a.id}", "callback_data": ApprovalCb(a="y", id=a.id).pack()},
            {"text": f"❌ #{a.id}", "callback_data": ApprovalCb(a="n", id=a.id).pack()},
            {"text": f"ℹ️ #{a.id}", "callback_data": ApprovalCb(a="d", id=a.id).pack()},
        ]
        for a in approvals
    ]


def reminder(approval: Approval, display: Display, now: datetime) -> str:
    """The half-time reminder, a reply to the approval's message."""
    return (
        f"⏰ Approval #{approval.id} ({escape(summary(approval))}) still waits for "
        f"{escape(who_decides(approval))}; deadline "
        f"{moment(approval.deadline, display, now)}."
    )


def escalated(approval: Approval, display: Display, now: datetime) -> str:
    """The notice of an escalation to the owners, a reply to the approval's message."""
    return (
        f"⏫ Approval #{approval.id} ({escape(summary(approval))}) had no decision by its "
        f"deadline; escalated to the owners until {moment(approval.deadline, display, now)}."
    )


def escalated_note(approval: Approval, display: Display, now: datetime) -> str:
    """The same, as the requesting task's comment (plain text)."""
    return (
        f"Approval #{approval.id} ({summary(approval)}) had no decision in time; "
        f"escalated to the owners, new deadline {moment(approval.deadline, display, now)}."
    )
