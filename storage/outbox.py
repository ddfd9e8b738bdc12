"""The outbox: every outbound Telegram message except a command's direct reply is a row first.

`enqueue` is how the rest of the code sends; the functions below it are the sender's
transitions (pending -> sent | failed, with `begin_send` / `record_part` around each part),
each a conditional update that says whether it won.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import touch
from storage.models import Outbox, OutboxSend, is_row_id, utcnow
from storage.statuses import OutboxStatus
from storage.transition import change, insert


@dataclass(frozen=True)
class Destination:
    """Where a message goes: a chat, optionally a forum topic; `feed` names it for people."""

    chat_id: int
    topic: int | None = None
    feed: str | None = None


# Rows that must never go out twice (a publication): one found in flight after a crash, or
# whose send got no answer, is failed with IN_FLIGHT_ERROR instead of resent, and its owner
# reports it `unknown`.
AT_MOST_ONCE = ("publication:",)
IN_FLIGHT_ERROR = "sent without an answer (a crash or a timeout): it may be there, so not resent"


def at_most_once(dedup_key: str) -> bool:
    return dedup_key.startswith(AT_MOST_ONCE)


Button = dict[str, str]  # {"text": ..., "callback_data": ...} or {"text": ..., "url": ...}


async def enqueue(
    session: AsyncSession,
    to: Destination,
    text: str,
    *,
    buttons: list[list[Button]] | None = None,
    dedup_key: str | None = None,
    edit_of: str | None = None,
    reply_to: str | None = None,
) -> int | None:
    """Queue a message. Returns its row id, or None if `dedup_key` was already queued (the
    message is then not queued twice).

    `edit_of` names the dedup key of an earlier message to `to`: this row then replaces that
    message's text and buttons (its last part; `buttons=None` removes them) instead of sending
    a new one, and is sent as a new message if the original never went out. `reply_to` names
    an earlier message this one answers. Rows of one chat go out in order, so the original is
    always settled before its edit or reply."""
    values: dict[str, Any] = {
        "feed": to.feed,
        "chat_id": to.chat_id,
        "topic": to.topic,
        "text": text,
        "buttons": buttons,
        "dedup_key": dedup_key or f"once:{uuid.uuid4().hex}",
        "edit_of": edit_of,
        "reply_to": reply_to,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "parts_sent": 0,
        "sent_message_ids": [],
        "next_attempt_at": utcnow(),
        "created_at": utcnow(),
    }
    stmt = (
        insert(session, Outbox)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(Outbox.id)
    )
    row_id: int | None = (await session.execute(stmt)).scalar_one_or_none()
    if row_id is not None:
        touch(session, "outbox")
    return row_id


def _heads() -> ScalarSelect[int]:
    """The oldest pending row of each chat."""
    return (
        select(func.min(Outbox.id))
        .where(Outbox.status == OutboxStatus.PENDING)
        .group_by(Outbox.chat_id)
        .scalar_subquery()
    )


async def due_heads(
    session: AsyncSession,
    now: datetime,
    limit: int = 100,
    *,
    exclude: Collection[int] = (),
) -> list[Outbox]:
    """The oldest pending row of each chat, where that row is due, leaving out the chats in
    `exclude` (those the sender serves already). A chat whose oldest row waits (retry_after,
    backoff) sends nothing else, so each chat keeps its order."""
    stmt = select(Outbox).where(Outbox.id.in_(_heads()), Outbox.next_attempt_at <= now)
    if exclude:
        stmt = stmt.where(Outbox.chat_id.not_in(list(exclude)))
    stmt = stmt.order_by(Outbox.id).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def head_of(session: AsyncSession, chat_id: int) -> Outbox | None:
    """The oldest pending row of one chat, due or not."""
    stmt = (
        select(Outbox)
        .where(Outbox.chat_id == chat_id, Outbox.status == OutboxStatus.PENDING)
        .order_by(Outbox.id)
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def next_due_at(session: AsyncSession, *, exclude: Collection[int] = ()) -> datetime | None:
    """When the next head row (see `due_heads`) is due; rows queued behind a waiting head
    do not count, or the sender would wake for them and find nothing to send."""
    stmt = select(func.min(Outbox.next_attempt_at)).where(Outbox.id.in_(_heads()))
    if exclude:
        stmt = stmt.where(Outbox.chat_id.not_in(list(exclude)))
    value: datetime | None = (await session.execute(stmt)).scalar_one_or_none()
    return value


async def record_send(session: AsyncSession, chat_id: int, at: datetime) -> None:
    """A message goes to `chat_id` at `at`: the pacing state a restart reads back (a group may
    get only 20 messages a minute, whichever process sent them)."""
    session.add(OutboxSend(chat_id=chat_id, at=at))


async def recent_sends(session: AsyncSession, since: datetime) -> list[tuple[int, datetime]]:
    """(chat id, time) of the messages recorded by `record_send` since `since`, oldest first."""
    stmt = (
        select(OutboxSend.chat_id, OutboxSend.at)
        .where(OutboxSend.at >= since)
        .order_by(OutboxSend.at)
    )
    return [(chat_id, at) for chat_id, at in (await session.execute(stmt)).all()]


async def prune_sends(session: AsyncSession, before: datetime) -> None:
    """Forget sends older than any pacing window."""
    await session.execute(delete(OutboxSend).where(OutboxSend.at < before))


async def begin_send(session: AsyncSession, row_id: int, part: int) -> bool:
    """Mark part `part` (0-based) as handed to Telegram. Telegram takes no idempotency key,
    so a process killed between the send and `record_part` cannot know whether the part
    arrived; the mark lets the next sender say so instead of resending silently."""
    return await _pending(session, row_id, {"in_flight_at": utcnow()}, part=part)


async def record_part(
    session: AsyncSession, row_id: int, part: int, message_ids: list[int]
) -> bool:
    """Record that part `part` (0-based) went out, so a restart resumes after it."""
    values = {"parts_sent": part + 1, "sent_message_ids": message_ids, "in_flight_at": None}
    return await _pending(session, row_id, values, part=part)


async def mark_sent(session: AsyncSession, row_id: int) -> bool:
    values = {
        "status": OutboxStatus.SENT,
        "sent_at": utcnow(),
        "last_error": None,
        "in_flight_at": None,
    }
    return await _pending(session, row_id, values)


async def defer(
    session: AsyncSession, row_id: int, until: datetime, error: str, *, attempt: bool
) -> bool:
    """Try again at `until`. `attempt` counts it against the row's attempts (a 429 does not:
    Telegram said exactly when to come back)."""
    values: dict[str, Any] = {
        "next_attempt_at": until,
        "last_error": error[:1000],
        "in_flight_at": None,
    }
    if attempt:
        values["attempts"] = Outbox.attempts + 1
    return await _pending(session, row_id, values)


async def mark_failed(session: AsyncSession, row_id: int, error: str) -> bool:
    values = {
        "status": OutboxStatus.FAILED,
        "attempts": Outbox.attempts + 1,
        "last_error": error[:1000],
        "in_flight_at": None,
    }
    return await _pending(session, row_id, values)


async def _pending(
    session: AsyncSession, row_id: int, values: dict[str, Any], *, part: int | None = None
) -> bool:
    """Change a row still pending (and still at part `part`, when given): the sender's one
    conditional update, so a row another sender settled meanwhile is left alone."""
    where = [] if part is None else [Outbox.parts_sent == part]
    changed = await change(
        session, Outbox, row_id, values, only_from=(OutboxStatus.PENDING,), where=where
    )
    return changed.won


async def requeue(session: AsyncSession, row_id: int) -> bool:
    """Give a failed row another full set of attempts. Only a failed row can be requeued."""
    changed = await change(
        session,
        Outbox,
        row_id,
        {"status": OutboxStatus.PENDING, "attempts": 0, "next_attempt_at": utcnow()},
        only_from=(OutboxStatus.FAILED,),
    )
    touch(session, "outbox")
    return changed.won


async def get(session: AsyncSession, row_id: int) -> Outbox | None:
    if not is_row_id(row_id):
        return None
    return await session.get(Outbox, row_id)


async def sent_message_id(session: AsyncSession, dedup_key: str) -> tuple[int, int] | None:
    """(chat id, Telegram message id of the last part) of a delivered row, else None."""
    found = await session.execute(
        select(Outbox.chat_id, Outbox.sent_message_ids).where(
            Outbox.dedup_key == dedup_key, Outbox.parts_sent > 0
        )
    )
    row = found.first()
    if row is None or not row.sent_message_ids:
        return None
    return row.chat_id, int(row.sent_message_ids[-1])


async def unsent(session: AsyncSession, limit: int = 20) -> list[Outbox]:
    """Rows not delivered (pending or failed), oldest first."""
    stmt = (
        select(Outbox)
        .where(Outbox.status.in_((OutboxStatus.PENDING, OutboxStatus.FAILED)))
        .order_by(Outbox.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def latest(session: AsyncSession, key_prefix: str) -> Outbox | None:
    """The newest row whose dedup key starts with `key_prefix`."""
    stmt = (
        select(Outbox)
        .where(Outbox.dedup_key.startswith(key_prefix, autoescape=True))
        .order_by(Outbox.id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()
