"""The update ledger at work (see storage.updates): the leader records each batch of updates
before Telegram is told it arrived (`Receiver`, called by bot.polling.PollMonitor), the
handling of each update takes its row first (`UpdateLedger`, a middleware) and a duplicate is
dropped and logged, and a new leader handles the updates a dead leader received but had not
handled (`replay`).

On PostgreSQL the row is taken in the update's own transaction (the session of
DbSessionMiddleware, which runs before this): a node that dies half-way through an update
leaves it untaken, so the next leader handles it; one that finished it committed the mark with
what the update changed, so the next leader drops it. SQLite has one process: there the row is
taken in a short transaction of its own, so a read-only update does not hold SQLite's write
lock for as long as its handler takes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.types import TelegramObject, Update

from storage import updates
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class Receiver:
    """Records each getUpdates answer before aiogram sees it (bot.polling.PollMonitor): the
    next getUpdates confirms these updates to Telegram, and by then they are rows. A failure
    to record fails the getUpdates, so Telegram delivers the batch again."""

    def __init__(self, db: Database, node: str) -> None:
        self.db = db
        self.node = node

    async def __call__(self, batch: list[Update]) -> None:
        if not batch:
            return
        rows = [
            (u.update_id, u.model_dump(mode="json", by_alias=True, exclude_none=True))
            for u in batch
        ]
        async with self.db.session() as session:
            await updates.receive(session, rows, self.node, utcnow())


class UpdateLedger(BaseMiddleware):
    def __init__(self, node: str) -> None:
        self.node = node
        self.dropped = 0  # duplicates dropped since start

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        db: Database = data["db"]
        if db.is_sqlite:
            async with db.session() as session:
                first = await updates.take(session, event.update_id, self.node, utcnow())
        else:
            first = await updates.take(data["session"], event.update_id, self.node, utcnow())
        if first:
            return await handler(event, data)
        self.dropped += 1
        log.warning(
            "update %d dropped: it was handled already (delivered again after a takeover or "
            "a restart)",
            event.update_id,
        )
        return None


async def replay(dp: Dispatcher, bot: Bot, db: Database) -> int:
    """Handle the updates received (by a leader that died, or this process before a crash)
    and not handled; returns how many there were. Each goes through the dispatcher like a
    polled one, so the ledger still drops one that its first handler finished meanwhile."""
    async with db.session() as session:
        pending = await updates.unhandled(session, utcnow())
    if pending:
        log.warning("handling %d update(s) received but not handled before", len(pending))
    for payload in pending:
        try:
            update = Update.model_validate(payload, context={"bot": bot})
            await dp.feed_update(bot, update)
        except Exception:  # one bad update must not keep the leader from polling
            log.exception("update %s could not be handled again", payload.get("update_id"))
    return len(pending)
