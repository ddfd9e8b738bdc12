"""Callback data of buttons that services put on messages (through the outbox) and handlers
answer: defined here, below both, so neither imports the other. And `View`, a message as it
should look, which handlers edit a pressed message to (handlers.edits)."""

from __future__ import annotations

from dataclasses import dataclass

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup


@dataclass(frozen=True)
class View:
    """A message as it should look: text and buttons."""

    text: str
    markup: InlineKeyboardMarkup | None = None


class RunCb(CallbackData, prefix="run"):
    """A button on a run's line in the activity feed: `a` is "stop"; `id` the run."""

    a: str
    id: int


def stop_button(run_id: int) -> dict[str, str]:
    """The Stop button of a run's line in the activity feed, model and coding runs alike."""
    return {"text": "⏹ Stop", "callback_data": RunCb(a="stop", id=run_id).pack()}


def keyboard(rows: list[list[dict[str, str]]]) -> InlineKeyboardMarkup | None:
    """Outbox buttons (text and callback data) as the keyboard of a direct answer."""
    if not rows:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=b["text"], callback_data=b["callback_data"]) for b in row]
            for row in rows
        ]
    )
