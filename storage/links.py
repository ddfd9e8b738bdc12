"""Which entity a message of the bot shows, so that a reply to it acts on that entity.

Messages sent through the outbox are found by their rows (the dedup key names what they
show: `approval:<id>`, `task-status:<id>:…`, `activity:<run id>`, an incident alert's key);
messages a handler sent directly (a /task card, a "send back" prompt) are recorded in
`message_links` when they are sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Incident, MessageLink, Outbox, Run

TASK = "task"
SENDBACK = "sendback"  # a prompt for the reason a task is sent back; only its presser answers
APPROVAL = "approval"
INCIDENT = "incident"

SEARCHED = 500  # recent outbox rows of the chat looked through

_KEYS = (
    (re.compile(r"^approval:(\d+)(?::|$)"), APPROVAL),
    (re.compile(r"^task-status:(\d+):"), TASK),
    (re.compile(r"^activity:(\d+)(?::|$)"), "run"),
)


@dataclass(frozen=True)
class Shown:
    kind: str  # task | sendback | approval | incident
    entity_id: int
    person_id: int | None = None


async def remember(
    session: AsyncSession,
    *,
    chat_id: int,
    message_id: int,
    kind: str,
    entity_id: int,
    person_id: int | None = None,
) -> None:
    session.add(
        MessageLink(
            chat_id=chat_id,
            message_id=message_id,
            kind=kind,
            entity_id=entity_id,
            person_id=person_id,
        )
    )


async def shown_by(session: AsyncSession, chat_id: int, message_id: int) -> Shown | None:
    """What the bot's message `message_id` in `chat_id` shows, or None if nothing we know."""
    found = await session.execute(
        select(MessageLink)
        .where(MessageLink.chat_id == chat_id, MessageLink.message_id == message_id)
        .order_by(MessageLink.id.desc())
        .limit(1)
    )
    link = found.scalar_one_or_none()
    if link is not None:
        return Shown(link.kind, link.entity_id, link.person_id)
    rows = await session.execute(
        select(Outbox.dedup_key, Outbox.edit_of, Outbox.sent_message_ids)
        .where(Outbox.chat_id == chat_id, Outbox.parts_sent > 0)
        .order_by(Outbox.id.desc())
        .limit(SEARCHED)
    )
    for dedup_key, edit_of, sent in rows.all():
        if message_id not in [int(i) for i in sent or []]:
            continue
        return await _by_key(session, edit_of or dedup_key)
    return None


async def _by_key(session: AsyncSession, key: str) -> Shown | None:
    for pattern, kind in _KEYS:
        match = pattern.match(key)
        if match is None:
            continue
        entity_id = int(match.group(1))
        if kind != "run":
            return Shown(kind, entity_id)
        task_id = (
            await session.execute(select(Run.task_id).where(Run.id == entity_id))
        ).scalar_one_or_none()
        return Shown(TASK, task_id) if task_id is not None else None
    incident = await session.execute(
        select(Incident.id).where(Incident.alert_key == key).order_by(Incident.id).limit(1)
    )
    incident_id = incident.scalar_one_or_none()
    return Shown(INCIDENT, incident_id) if incident_id is not None else None
