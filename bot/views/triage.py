"""Email triage as people see it: the urgent email's message and its buttons (Create task, Mark
read, Snooze 4h, Dismiss), the daily digest, and /inbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from aiogram.filters.callback_data import CallbackData

from bot.views.text import esc, one_line
from storage.models import DbId, TriageItem
from storage.statuses import TriageStatus, TriageVerdict

REASON_SHOWN = 200  # characters of the verdict's reason shown
SHOWN_PER_VERDICT = 10

# action -> (the button's text, what the presser is told when it wins)
ACTIONS = {
    "task": ("Create task", "Task created"),
    "read": ("Mark read", "Marked read"),
    "snooze": ("Snooze 4h", "Snoozed for 4 hours"),
    "dismiss": ("Dismiss", "Dismissed"),
}


class TriageCb(CallbackData, prefix="tr"):
    """A button on an urgent email: `action` (task, read, snooze, dismiss) on item `id`."""

    action: str
    id: DbId


def buttons(item_id: int) -> list[list[dict[str, str]]]:
    """The urgent email's keyboard, as outbox buttons."""

    def button(action: str) -> dict[str, str]:
        return {
            "text": ACTIONS[action][0],
            "callback_data": TriageCb(action=action, id=item_id).pack(),
        }

    return [[button("task"), button("read")], [button("snooze"), button("dismiss")]]


def urgent(item: TriageItem, reason: str) -> str:
    """The message an urgent email gets in the triage feed."""
    return (
        f"📬 <b>Urgent email</b> · {esc(item.mailbox)}\n"
        f"<b>From:</b> {esc(one_line(item.sender, 200))}\n"
        f"<b>Subject:</b> {esc(one_line(item.subject, 300))}\n"
        f"<b>Why:</b> {esc(one_line(reason, REASON_SHOWN))}"
    )


def settled(text: str, note: str) -> str:
    """The urgent email's message once acted on: what was done, by whom."""
    return f"{text}\n\n✅ {esc(note)}"


def digest(day: date, normal: Sequence[TriageItem]) -> str:
    """The daily digest of the `normal` email of the day before `day`'s digest time."""
    lines = [f"📋 <b>Email digest</b> · {day.isoformat()}: {len(normal)} normal"]
    lines += [
        f"• {esc(i.mailbox)} · {esc(one_line(i.sender, 60))} — {esc(one_line(i.subject, 80))}"
        for i in normal
    ]
    if not normal:
        lines.append("Nothing waited in the normal pile.")
    return "\n".join(lines)


def inbox(found: Sequence[TriageItem], waiting: int, mailbox: str | None) -> str:
    """/inbox: today's judged email by verdict (the latest of each), and how many wait."""
    scope = esc(mailbox) if mailbox else "all mailboxes"
    lines = [f"📥 <b>Inbox today</b> · {scope}: {len(found)} judged"]
    if waiting:
        lines.append(f"{waiting} waiting for a verdict")
    for verdict in TriageVerdict:
        these = [i for i in found if i.verdict == verdict]
        lines.append(f"\n<b>{verdict}</b>: {len(these)}")
        for item in these[-SHOWN_PER_VERDICT:]:
            status = "" if item.status == TriageStatus.OPEN else f" [{item.status}]"
            lines.append(
                f"• #{item.id} {esc(one_line(item.sender, 50))} — "
                f"{esc(one_line(item.subject, 70))}{status}"
            )
        if len(these) > SHOWN_PER_VERDICT:
            lines.append(f"… and {len(these) - SHOWN_PER_VERDICT} earlier")
    return "\n".join(lines)
