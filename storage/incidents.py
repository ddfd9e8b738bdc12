"""Incidents: one open incident per fingerprint, severities P3..P0 behind escalation gates.

Gates (docs/design.md): an agent or a single failed check opens P3 (logged) or P2 (posted to
`alerts`). Anything asked above P2 is opened at P2 with `requested_severity` set, for the hub
and a person to confirm (storage.incident_gates). No single agent can page.

Every state change below is a conditional UPDATE that says whether it won; messages that go
with it (resolved notices, reminders, pages) are outbox rows in the same transaction. A notice
about an incident already announced replies to the announcing message, found through
`alert_key` (the outbox dedup key of that message), so no config is needed here.

A little over 400 lines: the lifecycle (open, acknowledge, silence, resolve, remind) is one
job; the escalation gates are storage.incident_gates and the texts bot/views/incidents.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.views import incidents as view
from storage import outbox
from storage.models import Incident, IncidentConfirmation, Outbox, Silence, utcnow
from storage.statuses import IncidentStatus
from storage.transition import affected, upsert

log = logging.getLogger(__name__)

SEVERITIES = ("P0", "P1", "P2", "P3")  # most severe first
LIVE = (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED, IncidentStatus.SILENCED)
# The highest severity anything may open on its own; above it is a request behind a gate.
UNGATED = ("P3", "P2")
ANNOUNCED = ("P2", "P1", "P0")  # P3 is logged only
REMINDED = ("P1", "P0")


async def open_incident(
    session: AsyncSession,
    *,
    fingerprint: str,
    severity: str,
    title: str,
    source: str,
    details: str = "",
) -> tuple[Incident, bool]:
    """Open an incident, or return the live one with this fingerprint and False.

    A severity above P2 is not granted here: the incident opens at P2 with the asked severity
    in `requested_severity`, for the hub (P1) and a person (P0) to confirm."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r} (use P3, P2, P1 or P0)")
    granted = severity if severity in UNGATED else "P2"
    existing = await live(session, fingerprint)
    if existing is not None:
        await _raise(session, existing, granted, severity, source)
        return existing, False
    incident = Incident(
        fingerprint=fingerprint[:128],
        severity=granted,
        requested_severity=None if granted == severity else severity,
        status=IncidentStatus.OPEN,
        title=title[:200],
        details=details[:4000],
        source=source[:64],
    )
    session.add(incident)
    await session.flush()
    log.info(
        "incident #%d opened: %s %s (%s)%s",
        incident.id,
        granted,
        title[:200],
        fingerprint,
        f", {severity} requested" if granted != severity else "",
    )
    return incident, True


def _above(a: str, b: str) -> bool:
    """Whether severity `a` is more severe than `b`."""
    return SEVERITIES.index(a) < SEVERITIES.index(b)


async def _raise(
    session: AsyncSession, incident: Incident, granted: str, asked: str, source: str
) -> None:
    """A new report for a live incident that asks more than it has: a P3 becomes P2 (then
    announced by the alerts pass, as it never was at P3), and a request above P2 is recorded
    for the hub. Without this, whoever opened a fingerprint first at P3 would keep every later
    P2 report of it logged only."""
    events: list[dict[str, Any]] = []
    if _above(granted, incident.severity):
        won = await set_if(
            session,
            incident.id,
            LIVE,
            extra=Incident.severity == incident.severity,
            severity=granted,
        )
        if won:
            events.append({"raised": granted, "by": source, "at": utcnow().isoformat()})
            log.info("incident #%d raised to %s by %s", incident.id, granted, source)
    if asked != granted and _above(asked, incident.severity) and not incident.requested_severity:
        won = await set_if(
            session,
            incident.id,
            LIVE,
            extra=Incident.requested_severity.is_(None),
            requested_severity=asked,
        )
        if won:
            events.append({"requested": asked, "by": source, "at": utcnow().isoformat()})
    for event in events:
        await record(session, incident.id, event)


async def note(session: AsyncSession, incident_id: int, *, actor: str, text: str) -> bool:
    """A person's note on an incident (a reply to its alert), kept with its other events.
    False if there is no such incident."""
    if await get(session, incident_id) is None:
        return False
    await record(
        session, incident_id, {"note": text[:2000], "by": actor, "at": utcnow().isoformat()}
    )
    return True


async def confirmations(session: AsyncSession, incident_id: int) -> list[dict[str, Any]]:
    """The incident's escalation record, oldest first: confirmations, requests, raises, P0
    decisions, notes, ended silences (each a dict with "by" and "at", see the callers)."""
    found = await session.execute(
        select(IncidentConfirmation.entry)
        .where(IncidentConfirmation.incident_id == incident_id)
        .order_by(IncidentConfirmation.id)
    )
    return list(found.scalars())


async def requested_by(session: AsyncSession, incident: Incident, actor: str) -> bool:
    """Whether `actor` opened the incident or asked for its escalation: it may not also be the
    one who confirms it (one agent alone never reaches P1)."""
    return incident.source == actor[:64] or any(
        c.get("requested") and c.get("by") == actor
        for c in await confirmations(session, incident.id)
    )


async def live(session: AsyncSession, fingerprint: str) -> Incident | None:
    stmt = select(Incident).where(Incident.fingerprint == fingerprint, Incident.status.in_(LIVE))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get(session: AsyncSession, incident_id: int) -> Incident | None:
    return await session.get(Incident, incident_id)


async def resolve(session: AsyncSession, *, fingerprint: str, actor: str) -> bool:
    """Resolve the live incident with this fingerprint. False if there is none."""
    incident = await live(session, fingerprint)
    return incident is not None and await resolve_id(session, incident.id, actor=actor)


async def resolve_id(
    session: AsyncSession, incident_id: int, *, actor: str, by: str | None = None
) -> bool:
    """Resolve an incident; an announced one gets a resolved notice replying to its alert
    (saying `by`, a person's name, or else who `actor` is). One that resolves before it was
    announced (inside group_wait) is never posted at all."""
    now = utcnow()
    won = await set_if(
        session,
        incident_id,
        LIVE,
        status=IncidentStatus.RESOLVED,
        resolved_at=now,
        resolved_by=actor[:64],
    )
    if won:
        incident = await fresh(session, incident_id)
        log.info("incident #%d resolved by %s", incident_id, actor)
        if incident.alert_key is not None:
            await reply_to_alert(
                session,
                incident.alert_key,
                view.resolved(incident, by or view.who(actor)),
                dedup_key=f"incident-resolved:{incident.id}",
            )
    return won


async def acknowledge(session: AsyncSession, incident_id: int, *, actor: str) -> bool:
    """open (or silenced) -> acknowledged: reminders stop. From silenced too, as a silenced
    incident is reminded of once its silence ends and the alerts pass has not reopened it yet."""
    return await set_if(
        session,
        incident_id,
        (IncidentStatus.OPEN, IncidentStatus.SILENCED),
        status=IncidentStatus.ACKNOWLEDGED,
        acknowledged_by=actor[:64],
        acknowledged_at=utcnow(),
    )


async def silence(
    session: AsyncSession, matcher: str, until: datetime, *, actor: str
) -> list[Incident]:
    """Silence a check id or a fingerprint until `until`: a silence row (shown in /status)
    and every live incident it matches marked silenced. Returns those incidents."""
    session.add(Silence(matcher=matcher[:128], until=until, created_by=actor[:64]))
    stmt = select(Incident).where(Incident.status.in_(LIVE), _matches(matcher))
    found = list((await session.execute(stmt)).scalars())
    for incident in found:
        await set_if(
            session, incident.id, LIVE, status=IncidentStatus.SILENCED, silenced_until=until
        )
    return found


def _matches(matcher: str) -> Any:
    return or_(Incident.fingerprint == matcher, Incident.fingerprint == f"check:{matcher}")


async def active_silences(session: AsyncSession, now: datetime | None = None) -> list[Silence]:
    stmt = select(Silence).where(Silence.until > (now or utcnow())).order_by(Silence.until)
    return list((await session.execute(stmt)).scalars())


async def count_live(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(Incident).where(Incident.status.in_(LIVE))
    return int((await session.execute(stmt)).scalar_one())


async def listing(session: AsyncSession, limit: int = 20) -> list[Incident]:
    """Live incidents, most severe and oldest first."""
    stmt = (
        select(Incident)
        .where(Incident.status.in_(LIVE))
        .order_by(Incident.severity, Incident.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def in_alert(session: AsyncSession, incident_id: int) -> list[Incident]:
    """The incident and every other one announced by the same alert message."""
    incident = await get(session, incident_id)
    if incident is None:
        return []
    if incident.alert_key is None:
        return [incident]
    stmt = select(Incident).where(Incident.alert_key == incident.alert_key).order_by(Incident.id)
    return list((await session.execute(stmt)).scalars())


# --- the alerts feed -------------------------------------------------------------------------


async def end_silences(session: AsyncSession, now: datetime) -> list[int]:
    """Silenced incidents whose silence is over go back to what they were (acknowledged if a
    person had acknowledged them, else open), so that one silenced before its first alert is
    announced, and reminders and acks work again. Returns their ids."""
    result = await session.execute(
        update(Incident)
        .where(Incident.status == IncidentStatus.SILENCED, Incident.silenced_until <= now)
        .values(
            status=case(
                (Incident.acknowledged_at.is_not(None), IncidentStatus.ACKNOWLEDGED),
                else_=IncidentStatus.OPEN,
            ),
            silenced_until=None,
        )
        .returning(Incident.id)
    )
    ended = sorted(result.scalars())
    for incident_id in ended:
        incident = await fresh(session, incident_id)
        await record(
            session,
            incident_id,
            {"silence": "ended", "status": incident.status, "at": now.isoformat()},
        )
        log.info("incident #%d: silence ended, %s again", incident_id, incident.status)
    return ended


async def pending_alerts(session: AsyncSession, now: datetime) -> list[Incident]:
    """Open incidents due in the alerts feed and not yet announced, minus silenced ones."""
    silenced = select(Silence.id).where(
        Silence.until > now,
        or_(
            Silence.matcher == Incident.fingerprint,
            literal("check:").concat(Silence.matcher) == Incident.fingerprint,
        ),
    )
    stmt = (
        select(Incident)
        .where(
            Incident.status == IncidentStatus.OPEN,
            Incident.alert_key.is_(None),
            Incident.severity.in_(ANNOUNCED),
            ~silenced.exists(),
        )
        .order_by(Incident.severity, Incident.id)
    )
    return list((await session.execute(stmt)).scalars())


async def last_alert_at(session: AsyncSession) -> datetime | None:
    value: datetime | None = (
        await session.execute(select(func.max(Incident.alerted_at)))
    ).scalar_one_or_none()
    return value


async def announce(
    session: AsyncSession,
    ids: Sequence[int],
    *,
    to: outbox.Destination,
    text: str,
    buttons: list[list[outbox.Button]] | None,
) -> list[int]:
    """Mark incidents as announced by one message and queue it, in one transaction. Returns
    the ids that were still waiting (the message is queued only if some were)."""
    if not ids:
        return []
    key = f"incident-alert:{min(ids)}"
    now = utcnow()
    result = await session.execute(
        update(Incident)
        .where(
            Incident.id.in_(ids),
            Incident.alert_key.is_(None),
            Incident.status == IncidentStatus.OPEN,
        )
        .values(alert_key=key, alerted_at=now)
        .returning(Incident.id)
    )
    won = sorted(result.scalars())
    if won:
        await outbox.enqueue(session, to, text, buttons=buttons, dedup_key=key)
    return won


async def due_reminders(session: AsyncSession, now: datetime, every: float) -> list[Incident]:
    """Announced, unacknowledged P1/P0 incidents not reminded of for `every` seconds."""
    before = now - timedelta(seconds=every)
    stmt = select(Incident).where(
        Incident.severity.in_(REMINDED),
        Incident.alert_key.is_not(None),
        or_(
            Incident.status == IncidentStatus.OPEN,
            and_(Incident.status == IncidentStatus.SILENCED, Incident.silenced_until <= now),
        ),
        func.coalesce(Incident.reminded_at, Incident.alerted_at) <= before,
    )
    return list((await session.execute(stmt)).scalars())


async def remind(session: AsyncSession, incident: Incident, now: datetime) -> bool:
    stamp = incident.reminded_at or incident.alerted_at
    result = await session.execute(
        update(Incident)
        .where(
            Incident.id == incident.id,
            Incident.status.in_((IncidentStatus.OPEN, IncidentStatus.SILENCED)),
            or_(Incident.reminded_at.is_(None), Incident.reminded_at == stamp),
        )
        .values(reminded_at=now)
    )
    if not affected(result) or incident.alert_key is None:
        return False
    await reply_to_alert(
        session,
        incident.alert_key,
        view.reminder(incident),
        dedup_key=f"incident-remind:{incident.id}:{int(now.timestamp())}",
    )
    return True


# --- shared with storage.incident_gates -------------------------------------------------------


async def set_if(
    session: AsyncSession,
    incident_id: int,
    allowed: Sequence[str],
    *,
    extra: Any = None,
    **values: Any,
) -> bool:
    """Set `values` if the incident's status is in `allowed` (and `extra` holds): the one
    conditional update of an incident; True when it won."""
    stmt = update(Incident).where(Incident.id == incident_id, Incident.status.in_(allowed))
    if extra is not None:
        stmt = stmt.where(extra)
    return affected(await session.execute(stmt.values(**values))) > 0


async def record(
    session: AsyncSession,
    incident_id: int,
    entry: dict[str, Any],
    *,
    once_key: str | None = None,
) -> None:
    """Add one event to the incident's escalation record (a row, in this transaction). With
    `once_key`, an event the incident already has is not added again."""
    values = {
        "incident_id": incident_id,
        "actor": str(entry.get("by") or "")[:64],
        "once_key": once_key,
        "entry": entry,
        "created_at": utcnow(),
    }
    if once_key is None:
        session.add(IncidentConfirmation(**values))
        await session.flush()
    else:
        await upsert(session, IncidentConfirmation, values, keys=["incident_id", "once_key"])


async def fresh(session: AsyncSession, incident_id: int) -> Incident:
    incident = await session.get(Incident, incident_id, populate_existing=True)
    assert incident is not None
    return incident


async def reply_to_alert(
    session: AsyncSession, alert_key: str, text: str, *, dedup_key: str
) -> None:
    """A message to the chat of the alert `alert_key`, as a reply to it."""
    row = (
        await session.execute(select(Outbox).where(Outbox.dedup_key == alert_key))
    ).scalar_one_or_none()
    if row is None:
        return
    to = outbox.Destination(row.chat_id, row.topic, row.feed)
    await outbox.enqueue(session, to, text, dedup_key=dedup_key, reply_to=alert_key)
