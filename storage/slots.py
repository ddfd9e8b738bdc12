"""The slot ledger: a fleet-wide scheduled job claims each of its slots (job, scheduled time)
before running it, so that across a leader takeover no slot runs twice and the new leader can
tell which slots nobody ran (bot.scheduler decides which of those it still runs).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import JobSlot
from storage.transition import affected, upsert

# Slots are read back only around a takeover; two days is plenty for a daily job's previous one.
KEEP = timedelta(days=2)


async def claim(
    session: AsyncSession, job_id: str, slot: datetime, node: str, at: datetime
) -> bool:
    """Claim `slot` of `job_id` for `node`; False when some node claimed it already."""
    return await upsert(
        session,
        JobSlot,
        {"job_id": job_id, "slot": slot, "node": node, "claimed_at": at},
        keys=["job_id", "slot"],
    )


async def latest(session: AsyncSession, job_id: str) -> datetime | None:
    """The newest slot of `job_id` that was claimed, if any."""
    result = await session.execute(select(func.max(JobSlot.slot)).where(JobSlot.job_id == job_id))
    return result.scalar_one_or_none()


async def claimed(session: AsyncSession, job_id: str, since: datetime) -> list[datetime]:
    """The slots of `job_id` claimed at or after `since`, oldest first."""
    result = await session.execute(
        select(JobSlot.slot)
        .where(JobSlot.job_id == job_id, JobSlot.slot >= since)
        .order_by(JobSlot.slot)
    )
    return list(result.scalars())


async def prune(session: AsyncSession, now: datetime) -> int:
    """Forget slots older than KEEP; returns how many rows went."""
    return affected(await session.execute(delete(JobSlot).where(JobSlot.slot < now - KEEP)))
