"""Included last: a command nobody handled gets a pointer to /help instead of silence, and a
press nobody handled (unknown or malformed data) is answered, so no button spins.

Commands only in private chats: in a feed group, a command may be meant for another bot."""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery, Message

from bot.args import INVALID_BUTTON
from bot.views.text import esc
from handlers.registry import Routes

router = Routes(__name__)


@router.message(F.chat.type == "private", F.text.startswith("/"))
async def unknown_command(message: Message) -> None:
    word = (message.text or "").split(maxsplit=1)[0][:64]
    await message.answer(f"Unknown command {esc(word)}. /help lists the commands you can use.")


@router.callback_query()
async def unknown_button(callback: CallbackQuery) -> None:
    await callback.answer(INVALID_BUTTON, show_alert=True)
