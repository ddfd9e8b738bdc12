"""Job beats: the last start, finish and error of every scheduled job."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import JobBeat
from storage.transition import upsert


async def started(
    session: AsyncSession, job_id: str, at: datetime, interval_s: int | None
) -> None:
    await upsert(
        session,
        JobBeat,
        {"job_id": job_id, "interval_s": interval_s, "last_start": at, "runs": 1, "failures": 0},
        keys=["job_id"],
        update_columns={"last_start": at, "interval_s": interval_s, "runs": JobBeat.runs + 1},
    )


async def registered(
    session: AsyncSession, job_id: str, at: datetime, interval_s: int | None
) -> None:
    """The process starting at `at` will run `job_id` every `interval_s`: until its first
    interval (and the watchdog's grace) has passed, it is not late."""
    await upsert(
        session,
        JobBeat,
        {
            "job_id": job_id,
            "interval_s": interval_s,
            "registered_at": at,
            "runs": 0,
            "failures": 0,
        },
        keys=["job_id"],
        update_columns=["registered_at", "interval_s"],
    )


async def finished(session: AsyncSession, job_id: str, at: datetime, error: str | None) -> None:
    values: dict[str, object] = {"last_finish": at}
    if error is None:
        values["last_success"] = at
    else:
        values |= {"last_error": error[:2000], "last_error_at": at}
        values["failures"] = JobBeat.failures + 1
    await session.execute(update(JobBeat).where(JobBeat.job_id == job_id).values(**values))


async def all_beats(session: AsyncSession) -> list[JobBeat]:
    return list((await session.execute(select(JobBeat).order_by(JobBeat.job_id))).scalars())
