"""Key-profile state shared by every node: a (model, profile) pair cooling down after a 429,
and the mark of a profile whose key Anthropic rejected (401/403).

Written with `transition.upsert` (a later 429 moves the cooldown, a new rejection replaces
the mark), read before a call chooses its pair (see agents.failover)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import ProfileState, utcnow
from storage.transition import upsert

PROFILE = ""  # the `model` of a row about the profile itself (its rejection mark)


async def read(session: AsyncSession, profiles: Collection[str]) -> list[ProfileState]:
    """The rows of `profiles`: their pairs' cooldowns and their rejection marks."""
    if not profiles:
        return []
    found = await session.execute(
        select(ProfileState).where(ProfileState.profile.in_(list(profiles)))
    )
    return list(found.scalars())


async def cool_down(session: AsyncSession, model: str, profile: str, until: datetime) -> None:
    """(model, profile) is not called again before `until` by any node."""
    await upsert(
        session,
        ProfileState,
        {
            "profile": profile,
            "model": model,
            "cooling_until": until,
            "rejected_key": None,
            "updated_at": utcnow(),
        },
        keys=["profile", "model"],
        update_columns=["cooling_until", "updated_at"],
    )


async def reject(session: AsyncSession, profile: str, key: str) -> None:
    """Mark `profile` rejected while its key is the one with digest `key`."""
    await upsert(
        session,
        ProfileState,
        {
            "profile": profile,
            "model": PROFILE,
            "cooling_until": None,
            "rejected_key": key,
            "updated_at": utcnow(),
        },
        keys=["profile", "model"],
        update_columns=["rejected_key", "updated_at"],
    )
