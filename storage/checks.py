"""Health check state: consecutive results and recovery attempts, one row per check."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import CheckState
from storage.transition import change, upsert

HOUR = timedelta(hours=1)


async def record_probe(
    session: AsyncSession, check_id: str, *, ok: bool, detail: str, at: datetime
) -> CheckState:
    """Count one probe result: a success resets the failures and the other way round."""
    await upsert(
        session,
        CheckState,
        {
            "check_id": check_id,
            "up": ok,
            "consecutive_failures": 0 if ok else 1,
            "consecutive_successes": 1 if ok else 0,
            "last_checked_at": at,
            "last_detail": detail[:2000],
            "recover_count": 0,
        },
        keys=["check_id"],
        update_columns={
            "up": ok,
            "consecutive_failures": 0 if ok else CheckState.consecutive_failures + 1,
            "consecutive_successes": CheckState.consecutive_successes + 1 if ok else 0,
            "last_checked_at": at,
            "last_detail": detail[:2000],
        },
    )
    state = await session.get(CheckState, check_id, populate_existing=True)
    assert state is not None
    return state


async def claim_recovery(
    session: AsyncSession, check_id: str, *, now: datetime, per_hour: int, backoff: timedelta
) -> int | None:
    """Take the next recovery attempt if the hourly limit and the backoff allow it: returns
    the attempt's number within the hour, or None. The backoff doubles after each attempt."""
    state = await session.get(CheckState, check_id, populate_existing=True)
    if state is None:
        return None
    if state.next_recover_at is not None and now < state.next_recover_at:
        return None
    window = state.recover_window_start
    fresh_window = window is None or now - window >= HOUR
    count = 0 if fresh_window else state.recover_count
    if count >= per_hour:
        return None
    attempt = count + 1
    # Only from the state read above: of two probes racing for the attempt, one takes it.
    taken = await change(
        session,
        CheckState,
        check_id,
        {
            "recover_window_start": now if fresh_window else window,
            "recover_count": attempt,
            "next_recover_at": now + backoff * (2 ** (attempt - 1)),
            "last_recover_at": now,
        },
        where=[
            CheckState.recover_count == state.recover_count,
            (
                CheckState.next_recover_at.is_(None)
                if state.next_recover_at is None
                else CheckState.next_recover_at == state.next_recover_at
            ),
        ],
    )
    return attempt if taken.won else None


async def record_recovery(session: AsyncSession, check_id: str, outcome: str) -> None:
    await session.execute(
        update(CheckState)
        .where(CheckState.check_id == check_id)
        .values(last_recover_outcome=outcome[:2000])
    )


async def get(session: AsyncSession, check_id: str) -> CheckState | None:
    return await session.get(CheckState, check_id)


async def all_states(session: AsyncSession) -> list[CheckState]:
    return list(
        (await session.execute(select(CheckState).order_by(CheckState.check_id))).scalars()
    )
