"""What the web page keeps: the generated signing key, used sign-in links, and the outside
alerts behind incidents (see bot/web)."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import ExternalAlert, WebKey, WebSignin, utcnow
from storage.transition import upsert

SIGNING_KEY = "signing"


async def signing_key(session: AsyncSession) -> str:
    """The key generated on first use and kept from then on (every node reads the same one)."""
    await upsert(
        session,
        WebKey,
        {"name": SIGNING_KEY, "value": secrets.token_urlsafe(48), "created_at": utcnow()},
        keys=["name"],
    )
    value: str = (
        await session.execute(select(WebKey.value).where(WebKey.name == SIGNING_KEY))
    ).scalar_one()
    return value


async def use_signin(session: AsyncSession, token_id: str, person_id: int) -> bool:
    """Record that a sign-in link was used; False if it had been already (links work once)."""
    return await upsert(
        session,
        WebSignin,
        {"token_id": token_id[:64], "person_id": person_id, "used_at": utcnow()},
        keys=["token_id"],
    )


async def record_alert(
    session: AsyncSession,
    *,
    incident_id: int,
    source: str,
    fingerprint: str,
    labels: dict[str, str],
) -> None:
    """Keep an outside alert's labels with its incident (once per incident)."""
    await upsert(
        session,
        ExternalAlert,
        {
            "incident_id": incident_id,
            "source": source[:32],
            "fingerprint": fingerprint[:128],
            "labels": labels,
            "created_at": utcnow(),
        },
        keys=["incident_id"],
    )


async def alert_of(session: AsyncSession, incident_id: int) -> ExternalAlert | None:
    stmt = select(ExternalAlert).where(ExternalAlert.incident_id == incident_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_silence(session: AsyncSession, incident_id: int, silence_id: str) -> None:
    alert = await alert_of(session, incident_id)
    if alert is not None:
        alert.silence_id = silence_id[:64]
