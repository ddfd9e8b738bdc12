"""TEMP stub: the incidents branch owns this module; only the two calls triage makes."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Incident, utcnow

_OPEN = ("open", "acknowledged", "silenced")


async def open_incident(
    session: AsyncSession,
    *,
    fingerprint: str,
    severity: str,
    title: str,
    source: str,
    details: str = "",
) -> tuple[Incident, bool]:
    found = (
        await session.execute(
            select(Incident).where(Incident.fingerprint == fingerprint, Incident.status.in_(_OPEN))
        )
    ).scalar_one_or_none()
    if found is not None:
        return found, False
    incident = Incident(
        fingerprint=fingerprint, severity=severity, title=title, source=source, details=details
    )
    session.add(incident)
    await session.flush()
    return incident, True


async def resolve(session: AsyncSession, *, fingerprint: str, actor: str) -> bool:
    result = await session.execute(
        update(Incident)
        .where(Incident.fingerprint == fingerprint, Incident.status.in_(_OPEN))
        .values(status="resolved", resolved_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
