"""What replies and plain text get: the hint under plain text in the private chat, with the
button that makes the text a task for the hub, and the answers to a reply."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.views.text import esc, one_line

HINT = (
    "I take commands, not chat: /help lists yours. To comment on a task, reply to its card "
    "(/task &lt;id&gt;); to add a note to an approval or an alert, reply to it."
)


class DraftCb(CallbackData, prefix="dr"):
    """The button under the hint: `a` is "hub" (make the replied-to text a task for the hub)."""

    a: str


def hint_buttons() -> InlineKeyboardMarkup:
    button = InlineKeyboardButton(
        text="Make this a task for the hub", callback_data=DraftCb(a="hub").pack()
    )
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


def task_made(task_id: int, hub_id: str, title: str) -> str:
    """The hint once its button made the task."""
    return f"Task #{task_id} for {esc(hub_id)}: {esc(one_line(title, 200))}"
