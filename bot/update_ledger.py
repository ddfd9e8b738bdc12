"""Drops a Telegram update this fleet already took (see storage.updates): after a leader
takeover, Telegram delivers again what the old leader had not confirmed.

On PostgreSQL the ledger row is written in the update's own transaction (the session of
DbSessionMiddleware, which runs before this): a node that dies half-way through an update
leaves no row, so the new leader handles the update; one that finished it committed the row
with what the update changed, so the new leader drops it. SQLite has one process: there the row
is written in a short transaction of its own, so a read-only update does not hold SQLite's
write lock for as long as its handler takes. Updates refused by AuthMiddleware (strangers)
are not recorded: their refusal is rate-limited and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

from storage import updates
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


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
                first = await updates.record(session, event.update_id, self.node, utcnow())
        else:
            first = await updates.record(data["session"], event.update_id, self.node, utcnow())
        if first:
            return await handler(event, data)
        self.dropped += 1
        log.warning(
            "update %d dropped: it was handled already (delivered again after a takeover or "
            "a restart)",
            event.update_id,
        )
        return None
