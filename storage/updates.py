"""The update ledger: every Telegram update is recorded by `update_id` before it is handled.

The leader records each batch getUpdates returns (`receive`) before the next getUpdates tells
Telegram it arrived, and the handling of each update takes its row (`take`) in the update's own
transaction. So after a leader takeover, the new leader handles the updates the old one
received but had not handled (`unhandled`), and drops a duplicate that Telegram delivers
again (`take` answers False). Rows older than Telegram's own 24-hour keep of unconfirmed
updates can go (`prune`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import TelegramUpdate
from storage.transition import affected, upsert

# Telegram keeps an unconfirmed update for 24 hours; a day and a margin covers every redelivery.
KEEP = timedelta(hours=36)


async def receive(
    session: AsyncSession, batch: list[tuple[int, dict[str, Any]]], node: str, at: datetime
) -> int:
    """Record the updates of one getUpdates answer (id, payload) that are new; returns how
    many were."""
    new = 0
    for update_id, payload in batch:
        new += await upsert(
            session,
            TelegramUpdate,
            {"update_id": update_id, "node": node, "received_at": at, "payload": payload},
            keys=["update_id"],
        )
    return new


async def take(session: AsyncSession, update_id: int, node: str, at: datetime) -> bool:
    """Mark `update_id` handled by `node`; False when it was handled already (drop it).

    In the transaction that handles the update: on PostgreSQL, while another node's
    transaction has the same row taken but uncommitted, this waits for it, and finds it
    handled if that transaction committed, or takes it if it rolled back (the node died
    mid-update). An update not received through `receive` (fed another way) is recorded here."""
    taken = await session.execute(
        update(TelegramUpdate)
        .where(TelegramUpdate.update_id == update_id, TelegramUpdate.handled_at.is_(None))
        .values(handled_at=at, node=node)
    )
    if affected(taken):
        return True
    return await upsert(
        session,
        TelegramUpdate,
        {"update_id": update_id, "node": node, "received_at": at, "handled_at": at},
        keys=["update_id"],
    )


async def unhandled(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    """The payloads of the updates received within KEEP and not handled, oldest first."""
    result = await session.execute(
        select(TelegramUpdate.payload)
        .where(
            TelegramUpdate.handled_at.is_(None),
            TelegramUpdate.payload.is_not(None),
            TelegramUpdate.received_at >= now - KEEP,
        )
        .order_by(TelegramUpdate.update_id)
    )
    return [payload for payload in result.scalars() if payload is not None]


async def prune(session: AsyncSession, now: datetime) -> int:
    """Forget updates older than KEEP; returns how many rows went."""
    result = await session.execute(
        delete(TelegramUpdate).where(TelegramUpdate.received_at < now - KEEP)
    )
    return affected(result)
