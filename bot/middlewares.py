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

from bot.config import Config, Role
from storage.db import Database

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

REFUSAL = "This bot serves a private fleet, and you are not on its list."


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
    """At most one refusal per unknown user per hour, in bounded memory."""

    def __init__(self, period: float = 3600.0, max_users: int = 10_000) -> None:
        self.period = period
        self.max_users = max_users
        self._last: dict[int, float] = {}

    def allow(self, user_id: int) -> bool:
        now = time.monotonic()
        if now - self._last.get(user_id, -1e12) < self.period:
            return False
        if len(self._last) >= self.max_users:
            self._last = {u: t for u, t in self._last.items() if now - t < self.period}
        self._last[user_id] = now
        return True


class AuthMiddleware(BaseMiddleware):
    """Maps the sender to a configured person, or refuses them.

    Group chats other than the configured feeds are ignored entirely. Unknown users who send a
    command or press a button get one short refusal per hour; plain chatter is ignored.
    """

    def __init__(self, refusals: RefusalLimiter | None = None) -> None:
        self.refusals = refusals or RefusalLimiter()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        config: Config = data["config"]
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        if chat is not None and chat.type != "private" and chat.id not in config.feed_chat_ids:
            log.debug("ignoring update from unconfigured group chat %d", chat.id)
            return None
        if user is None:
            return None
        person = config.person(user.id)
        if person is None:
            if isinstance(event, Update) and _asks_something(event):
                await self._refuse(event, user)
            return None
        data["person"] = person
        return await handler(event, data)

    async def _refuse(self, update: Update, user: User) -> None:
        if not self.refusals.allow(user.id):
            return
        log.warning(
            "refused unknown Telegram user id=%d username=%s (further refusals to this user "
            "are silent for an hour)",
            user.id,
            user.username or "-",
        )
        if update.callback_query is not None:
            await update.callback_query.answer(REFUSAL, show_alert=True)
        elif update.message is not None:
            await update.message.answer(REFUSAL)


def _asks_something(update: Update) -> bool:
    if update.callback_query is not None:
        return True
    message = update.message
    return bool(message and message.text and message.text.startswith("/"))


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
