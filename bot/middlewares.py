"""Dispatcher middlewares: who is asking, what they may do, the database session, and the
count of updates in flight (so shutdown can let them finish)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.flags import get_flag
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject, Update, User

from bot.args import clean_text
from bot.config import Config, Role
from bot.views.text import esc
from storage.db import Database

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# Valid as plain text (a callback answer) and as HTML (a message): no <, > or &.
REFUSAL = (
    "You are not on this fleet's list. Your Telegram id is {user_id}; ask the owner to add it "
    "under [[people]] in the config."
)
GROUP_REFUSAL = (
    "This bot answers only the people on this fleet's list; commands from anyone else are "
    "ignored here (this notice comes at most once an hour). {name}, your Telegram id is "
    "{user_id}; ask the owner to add it under [[people]] in the config."
)
NOT_ON_MESSAGE = "This button is not on this message; nothing was changed."
NOT_A_FEED = "This chat is not one of this fleet's feeds; its buttons do nothing."


class InFlight(BaseMiddleware):
    """Counts updates being handled; `drain` waits for them at shutdown."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        self.count += 1
        self._idle.clear()
        try:
            return await handler(event, data)
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def drain(self, grace: float) -> bool:
        """Wait up to `grace` seconds for the updates in flight; False if some remain."""
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            return False
        return True


class RefusalLimiter:
    """At most one refusal per key (an unknown user's private chat, or a group) per hour, in
    bounded memory."""

    def __init__(self, period: float = 3600.0, max_users: int = 10_000) -> None:
        self.period = period
        self.max_users = max_users
        self._last: dict[int, float] = {}

    def allow(self, key: int) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e12) < self.period:
            return False
        if len(self._last) >= self.max_users:
            self._last = {u: t for u, t in self._last.items() if now - t < self.period}
        self._last[key] = now
        return True


class AuthMiddleware(BaseMiddleware):
    """Maps the sender to a configured person, or refuses them.

    Group chats other than the configured feeds are ignored, except /whoami from a person (how
    a new group's chat id is found). Unknown users who send a command get a refusal naming
    their Telegram id: once an hour per user in a private chat, once an hour per group in a
    group (a crowd of strangers must not flood a feed). A button press is always answered:
    the answer is private and costs no message, so only its log line is limited.
    """

    def __init__(
        self, refusals: RefusalLimiter | None = None, groups: RefusalLimiter | None = None
    ) -> None:
        self.refusals = refusals or RefusalLimiter()  # messages in private chats, per user
        self.groups = groups or RefusalLimiter()  # messages in groups, per group
        self.logged = RefusalLimiter()  # log lines, per user

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        config: Config = data["config"]
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        update = event if isinstance(event, Update) else None
        person = config.person(user.id) if user is not None else None
        if _unconfigured_group(chat, config) and not (person and update and _is_whoami(update)):
            log.debug("ignoring update from unconfigured group chat %d", chat.id if chat else 0)
            if update is not None and update.callback_query is not None:
                await update.callback_query.answer(NOT_A_FEED, show_alert=True)
            return None
        if user is None:
            return None
        if person is None:
            if update is not None and _asks_something(update):
                await self._refuse(update, user, chat)
            return None
        data["person"] = person
        return await handler(event, data)

    async def _refuse(self, update: Update, user: User, chat: Chat | None) -> None:
        text = REFUSAL.format(user_id=user.id)
        in_group = chat is not None and chat.type != "private"
        if self.logged.allow(user.id):
            log.warning(
                "refused unknown Telegram user id=%d username=%s (further refusals to this "
                "user are not logged for an hour)",
                user.id,
                user.username or "-",
            )
        if update.callback_query is not None:
            await update.callback_query.answer(text, show_alert=True)
            return
        if update.message is None:
            return
        if in_group:
            assert chat is not None
            if not self.groups.allow(chat.id):
                return
            text = GROUP_REFUSAL.format(name=esc(user.first_name), user_id=user.id)
        elif not self.refusals.allow(user.id):
            return
        await update.message.answer(text)


def _asks_something(update: Update) -> bool:
    if update.callback_query is not None:
        return True
    message = update.message
    return bool(message and message.text and message.text.startswith("/"))


def _unconfigured_group(chat: Chat | None, config: Config) -> bool:
    return chat is not None and chat.type != "private" and chat.id not in config.feed_chat_ids


def _is_whoami(update: Update) -> bool:
    message = update.message
    if message is None or not message.text:
        return False
    word = message.text.split(maxsplit=1)[0].lower()
    return word == "/whoami" or word.startswith("/whoami@")


class CleanText(BaseMiddleware):
    """Removes control characters (but tab and newline) from message text before any handler
    sees it: PostgreSQL refuses NUL in text, and none of them means anything in a chat."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if isinstance(event, Message) and event.text is not None:
            cleaned = clean_text(event.text)
            if cleaned != event.text:
                event = event.model_copy(update={"text": cleaned})
        return await handler(event, data)


class PressedButtonCheck(BaseMiddleware):
    """A press acts only with a button that is on the message pressed: Telegram delivers the
    message with its keyboard, so data that is not among its buttons (forged, or a button of
    another message) is refused before any handler changes anything.

    A handler flagged `settled_press` (it acts on the row in its data, never on the message)
    also answers a press on a message whose buttons are gone: a decision removed them, and the
    presser is told who decided. A press on an inaccessible message cannot be checked; the
    handlers re-check the database and cannot edit such a message.
    """

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, CallbackQuery) or not isinstance(event.message, Message):
            return await handler(event, data)
        markup = event.message.reply_markup
        buttons = {
            button.callback_data
            for row in (markup.inline_keyboard if markup is not None else [])
            for button in row
            if button.callback_data is not None
        }
        if event.data in buttons or (not buttons and get_flag(data, "settled_press")):
            return await handler(event, data)
        log.warning(
            "refused a press with data %r that is not on message %d in chat %d (user %d)",
            (event.data or "")[:80],
            event.message.message_id,
            event.message.chat.id,
            event.from_user.id,
        )
        await event.answer(NOT_ON_MESSAGE, show_alert=True)
        return None


class RoleMiddleware(BaseMiddleware):
    """Refuses a handler whose `role` flag is above the caller's role, naming both."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        needed: Role | None = get_flag(data, "role")
        person = data.get("person")
        if needed is None or person is None or person.role.allows(needed):
            return await handler(event, data)
        command = get_flag(data, "command")
        what = f"/{command}" if command else "This action"
        refusal = f"{what} needs the {needed} role; you are {person.role}."
        if isinstance(event, Message):
            await event.answer(refusal)
        elif isinstance(event, CallbackQuery):
            await event.answer(refusal, show_alert=True)
        return None


class DbSessionMiddleware(BaseMiddleware):
    """One database session per update; it commits when the handler returns normally."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        db: Database = data["db"]
        async with db.session() as session:
            data["session"] = session
            return await handler(event, data)
