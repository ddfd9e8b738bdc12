"""Agent inboxes: escalations, messages to the hub, oversight notices. Sending wakes the
recipient; its next run reads the unread messages and marks them read when it succeeds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import runs
from storage.models import InboxMessage, utcnow


async def send(
    session: AsyncSession,
    agent_id: str,
    *,
    kind: str,
    source: str,
    body: str,
    task_id: int | None = None,
    dedup_key: str | None = None,
    wake: bool = True,
) -> bool:
    """Leave a message for `agent_id` and wake it (`wake=False`: its next run reads it).
    With a `dedup_key` already used, nothing happens and False is returned."""
    if dedup_key is not None:
        seen = await session.execute(
            select(InboxMessage.id).where(InboxMessage.dedup_key == dedup_key)
        )
        if seen.first() is not None:
            return False
    session.add(
        InboxMessage(
            agent_id=agent_id,
            kind=kind,
            source=source,
            body=body,
            task_id=task_id,
            dedup_key=dedup_key,
        )
    )
    if wake:
        await runs.wake(session, agent_id, "escalation" if kind == "escalation" else "message")
    return True


async def unread(session: AsyncSession, agent_id: str, limit: int = 20) -> list[InboxMessage]:
    stmt = (
        select(InboxMessage)
        .where(InboxMessage.agent_id == agent_id, InboxMessage.read_at.is_(None))
        .order_by(InboxMessage.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def has_unread(session: AsyncSession, agent_id: str) -> bool:
    stmt = select(InboxMessage.id).where(
        InboxMessage.agent_id == agent_id, InboxMessage.read_at.is_(None)
    )
    return (await session.execute(stmt.limit(1))).first() is not None


async def mark_read(session: AsyncSession, ids: list[int], at: datetime | None = None) -> None:
    if ids:
        await session.execute(
            update(InboxMessage)
            .where(InboxMessage.id.in_(ids), InboxMessage.read_at.is_(None))
            .values(read_at=at or utcnow())
        )


async def oversight(session: AsyncSession, hub_id: str, body: str, dedup_key: str) -> bool:
    """An oversight notice for the hub (a job missed, a tool refused for authority, an agent
    over budget, a config file changed): read on its next heartbeat. Once per `dedup_key`."""
    return await send(
        session, hub_id, kind="oversight", source="oversight", body=body, dedup_key=dedup_key
    )
