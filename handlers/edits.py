"""Editing the message a button is on: make it look like a view (text and buttons), once,
even when two presses of one button arrive together, and never with an edit that changes
nothing (Telegram refuses those: 400 "message is not modified")."""

from __future__ import annotations

import logging
from collections import OrderedDict

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot.views.buttons import View
from bot.views.text import plain

log = logging.getLogger(__name__)


def _markup(markup: InlineKeyboardMarkup | None) -> object:
    return markup.model_dump(exclude_none=True) if markup is not None else None


def shows(message: Message, view: View, *, markup_only: bool = False) -> bool:
    """Whether `message` already looks like `view` (Telegram refuses an edit that changes
    nothing: 400 "message is not modified")."""
    same_markup = _markup(message.reply_markup) == _markup(view.markup)
    return same_markup and (markup_only or message.text == plain(view.text))


class _LastEdits:
    """What this process last made each recently edited message show. Two presses of one
    button at once both arrive with the message as it was; the second must not repeat the
    first's edit (Telegram refuses an edit that changes nothing). Bounded: the oldest go."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._views: OrderedDict[tuple[int, int], tuple[str, object]] = OrderedDict()

    def claim(self, key: tuple[int, int], shown: tuple[str, object]) -> bool:
        """True if the message is not known to show `shown` already; it is recorded as
        showing it (no await in between, so two presses cannot both claim one edit)."""
        if self._views.get(key) == shown:
            return False
        self._views[key] = shown
        self._views.move_to_end(key)
        while len(self._views) > self.size:
            self._views.popitem(last=False)
        return True

    def forget(self, key: tuple[int, int]) -> None:
        self._views.pop(key, None)


_last_edits = _LastEdits()


async def edit(callback: CallbackQuery, view: View, *, markup_only: bool = False) -> None:
    """Make the message the button is on look like `view`, unless it already does. A failed
    edit (message deleted, too old) does not undo what was done, so it is only logged."""
    message = callback.message
    if not isinstance(message, Message) or shows(message, view, markup_only=markup_only):
        return
    key = (message.chat.id, message.message_id)
    if not _last_edits.claim(key, ("" if markup_only else view.text, _markup(view.markup))):
        return
    try:
        if markup_only:
            await message.edit_reply_markup(reply_markup=view.markup)
        else:
            await message.edit_text(view.text, reply_markup=view.markup)
    except TelegramBadRequest as err:
        _last_edits.forget(key)
        if "message is not modified" not in err.message:
            log.warning("could not edit message %d: %s", message.message_id, err.message)
