"""The update ledger: every Telegram update is recorded by `update_id` before it is handled.

After a leader takeover Telegram delivers again the updates the old leader had taken but not
yet confirmed (the offset moves only with the next getUpdates); the ledger is how the new
leader knows which of them were already handled. Rows older than Telegram's own 24-hour keep
of unconfirmed updates can go (`prune`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import TelegramUpdate
from storage.transition import affected, upsert

# Telegram keeps an unconfirmed update for 24 hours; a day and a margin covers every redelivery.
KEEP = timedelta(hours=36)


async def record(session: AsyncSession, update_id: int, node: str, at: datetime) -> bool:
    """Record that `node` handles `update_id`; False when it was recorded before (drop it).

    On PostgreSQL, inside the transaction that handles the update: while another node's
    transaction holds the same id uncommitted, this waits for it, and finds the row if that
    transaction committed, or writes it if it rolled back (the node died mid-update)."""
    return await upsert(
        session,
        TelegramUpdate,
        {"update_id": update_id, "node": node, "received_at": at},
        keys=["update_id"],
    )


async def prune(session: AsyncSession, now: datetime) -> int:
    """Forget updates older than KEEP; returns how many rows went."""
    result = await session.execute(
        delete(TelegramUpdate).where(TelegramUpdate.received_at < now - KEEP)
    )
    return affected(result)
