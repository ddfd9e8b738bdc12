"""Triage items and mailbox state: every change to them is a function here.

An email becomes a row once (`message_id` unique, insert-or-ignore), is decided once
(`decide`: `WHERE verdict IS NULL`), and a person acts on it once (`act`: `WHERE status IN
(allowed)`). An urgent verdict queues its Telegram message in the same transaction, with the
dedup key `triage:<item id>`, so a restart can neither lose nor repeat it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import incidents, outbox, tasks
from storage.models import MailboxState, TriageItem, utcnow
from storage.statuses import TriageStatus, TriageVerdict
from storage.transition import Changed, change, insert

VERDICTS = tuple(TriageVerdict)

# to-status -> the statuses a person's button may move it from
_FROM: dict[str, tuple[TriageStatus, ...]] = {
    TriageStatus.TASKED: (TriageStatus.OPEN, TriageStatus.SNOOZED),
    TriageStatus.READ: (TriageStatus.OPEN, TriageStatus.SNOOZED),
    TriageStatus.DISMISSED: (TriageStatus.OPEN, TriageStatus.SNOOZED),
    TriageStatus.SNOOZED: (TriageStatus.OPEN,),
}
_ID_LIMIT = 512


class Envelope(Protocol):
    """What a row needs of an email's headers (integrations.mailbox.Envelope has it): storage
    names the shape it reads instead of importing the mailbox layer above it."""

    @property
    def backend_id(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def importance(self) -> str: ...
    @property
    def date(self) -> datetime | None: ...


@dataclass(frozen=True)
class Notice:
    """The Telegram message an urgent verdict queues."""

    to: outbox.Destination
    text: str
    buttons: list[list[outbox.Button]] | None


@dataclass(frozen=True)
class Outcome(Changed[TriageItem]):
    """A person's action on an item (see `Changed`), with why it was refused."""

    reason: str = ""

    @property
    def item(self) -> TriageItem | None:
        return self.row


def dedup_id(message_id: str) -> str:
    """Message-IDs longer than the column are hashed (still the same for every mailbox)."""
    if len(message_id) <= _ID_LIMIT:
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


async def add_seen(session: AsyncSession, mailbox: str, envelopes: Sequence[Envelope]) -> int:
    """Insert a row for each envelope not seen before (by Message-ID, in any mailbox), in the
    order given. Returns how many were new."""
    if not envelopes:
        return 0
    now = utcnow()
    rows = [
        {
            "message_id": dedup_id(e.message_id),
            "mailbox": mailbox,
            "backend_id": e.backend_id[:256],
            "sender": e.sender[:320],
            "subject": e.subject[:500],
            "importance": e.importance[:8],
            "status": TriageStatus.NEW,
            "received_at": e.date,
            "created_at": now,
            "snoozes": 0,
        }
        for e in envelopes
    ]
    # executemany runs the rows in order, so id order = the order given (the order urgent
    # items are posted in); rows already there are skipped by the unique index.
    # (rowcount of an executemany is not reliable on every driver: count instead)
    count = select(func.count(TriageItem.id))
    before = (await session.execute(count)).scalar_one()
    table = TriageItem.__table__
    await session.execute(
        insert(session, table).on_conflict_do_nothing(index_elements=["message_id"]),
        rows,
    )
    return int((await session.execute(count)).scalar_one() - before)


async def undecided(
    session: AsyncSession, mailbox: str, limit: int = 200, *, after: int = 0
) -> list[TriageItem]:
    """Items of `mailbox` without a verdict and with an id above `after`, oldest first."""
    stmt = (
        select(TriageItem)
        .where(
            TriageItem.mailbox == mailbox,
            TriageItem.verdict.is_(None),
            TriageItem.id > after,
        )
        .order_by(TriageItem.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def decide(
    session: AsyncSession,
    item_id: int,
    verdict: str,
    reason: str,
    *,
    by: str,
    notice: Notice | None = None,
) -> bool:
    """Record the verdict if the item has none yet; queue `notice` with it. Returns whether
    this call decided the item."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}")

    decided = await change(
        session,
        TriageItem,
        item_id,
        {
            "verdict": TriageVerdict(verdict),
            "reason": reason[:1000],
            "decided_by": by,
            "status": TriageStatus.OPEN,
            "decided_at": utcnow(),
        },
        where=[TriageItem.verdict.is_(None)],
        fetch=False,
    )
    if decided.won and notice is not None:
        await outbox.enqueue(
            session, notice.to, notice.text, buttons=notice.buttons, dedup_key=f"triage:{item_id}"
        )
    return decided.won


async def decide_quietly(
    session: AsyncSession, decisions: Sequence[tuple[int, str, str, str]]
) -> None:
    """Record many verdicts that queue no message: (item id, verdict, reason, by). An item
    that already has a verdict keeps it."""
    if not decisions:
        return
    now = utcnow()
    stmt = (
        update(TriageItem.__table__)  # type: ignore[arg-type]
        .where(TriageItem.__table__.c.id == bindparam("item_id"))
        .where(TriageItem.__table__.c.verdict.is_(None))
        .values(
            verdict=bindparam("v"),
            reason=bindparam("r"),
            decided_by=bindparam("b"),
            status=TriageStatus.OPEN,
            decided_at=now,
        )
    )
    await session.execute(
        stmt,
        [{"item_id": i, "v": v, "r": r[:1000], "b": b} for i, v, r, b in decisions],
    )


def message_key(item: TriageItem) -> str:
    """The dedup key of the item's current Telegram message: the first post, or the re-post
    after its last snooze ran out (a snoozed item's current message is the one before)."""
    posts = item.snoozes - (1 if item.status == TriageStatus.SNOOZED else 0)
    return f"triage:{item.id}" if posts <= 0 else f"triage:{item.id}:snooze:{posts}"


async def get(session: AsyncSession, item_id: int) -> TriageItem | None:
    return await session.get(TriageItem, item_id, populate_existing=True)


async def act(
    session: AsyncSession,
    item_id: int,
    to: str,
    *,
    actor: str,
    snoozed_until: datetime | None = None,
    task: dict[str, object] | None = None,
    edit: Notice | None = None,
) -> Outcome:
    """A person's button: move the item to `to` (tasked, read, snoozed, dismissed) if its
    status allows it. For `tasked`, `task` holds `tasks.create`'s title, body, assignee and
    max_retries; the task is created in the same transaction (idempotency key
    `triage:<id>`). `edit` replaces the item's current message (see `message_key`) in the
    same transaction. A refused change says what the item's status is."""
    item = await get(session, item_id)
    if item is None:
        return Outcome(False, None, f"there is no triage item #{item_id}")
    allowed = _FROM.get(to)
    if allowed is None:
        return Outcome(False, item, f'"{to}" is not an action on a triage item')
    if item.status not in allowed:
        return Outcome(False, item, f"item #{item_id} is {item.status}")
    # Read before the update, which may refresh `item` in the session.
    current_message, snoozes = message_key(item), item.snoozes
    values: dict[str, object] = {
        "status": TriageStatus(to),
        "acted_by": actor,
        "acted_at": utcnow(),
    }
    if to == TriageStatus.SNOOZED:
        values["snoozed_until"] = snoozed_until
        values["snoozes"] = TriageItem.snoozes + 1
    acted = await change(session, TriageItem, item_id, values, only_from=(item.status,))
    if not acted.won:
        return Outcome(False, acted.row, "someone else acted on it first")
    if edit is not None:
        await outbox.enqueue(
            session,
            edit.to,
            edit.text,
            buttons=edit.buttons,
            dedup_key=f"triage:{item_id}:{to}:{snoozes}",
            edit_of=current_message,
        )
    if to == TriageStatus.TASKED and task is not None:
        created = await tasks.create(
            session,
            title=str(task["title"]),
            body=str(task["body"]),
            assignee=str(task["assignee"]),
            creator=actor,
            max_retries=int(str(task["max_retries"])),
            priority=tasks.PRIORITIES["high"],
            idempotency_key=f"triage:{item_id}",
        )
        await session.execute(
            update(TriageItem).where(TriageItem.id == item_id).values(task_id=created.id)
        )
    return Outcome(True, await get(session, item_id))


async def due_snoozes(session: AsyncSession, now: datetime, limit: int = 100) -> list[TriageItem]:
    stmt = (
        select(TriageItem)
        .where(TriageItem.status == TriageStatus.SNOOZED, TriageItem.snoozed_until <= now)
        .order_by(TriageItem.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def wake(session: AsyncSession, item: TriageItem, notice: Notice | None) -> bool:
    """A snooze ran out: the item is open again and posted again (once per snooze)."""
    # Read before the change, which refreshes `item`.
    item_id, snoozes = item.id, item.snoozes

    async def post_again(_: TriageItem) -> None:
        if notice is not None:
            await outbox.enqueue(
                session,
                notice.to,
                notice.text,
                buttons=notice.buttons,
                dedup_key=f"triage:{item_id}:snooze:{snoozes}",
            )

    woken = await change(
        session,
        TriageItem,
        item_id,
        {"status": TriageStatus.OPEN, "snoozed_until": None},
        only_from=(TriageStatus.SNOOZED,),
        where=[TriageItem.snoozes == snoozes],
        then=post_again,
    )
    return woken.won


async def decided_between(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    *,
    mailbox: str | None = None,
    verdict: str | None = None,
    limit: int = 1000,
) -> list[TriageItem]:
    stmt = select(TriageItem).where(TriageItem.decided_at >= start, TriageItem.decided_at < end)
    if mailbox is not None:
        stmt = stmt.where(TriageItem.mailbox == mailbox)
    if verdict is not None:
        stmt = stmt.where(TriageItem.verdict == verdict)
    return list((await session.execute(stmt.order_by(TriageItem.id).limit(limit))).scalars())


async def count_undecided(session: AsyncSession, mailbox: str | None = None) -> int:
    stmt = select(func.count(TriageItem.id)).where(TriageItem.verdict.is_(None))
    if mailbox is not None:
        stmt = stmt.where(TriageItem.mailbox == mailbox)
    return int((await session.execute(stmt)).scalar_one())


# -- mailbox state -----------------------------------------------------------------------------


async def mailbox_state(session: AsyncSession, mailbox_id: str) -> MailboxState:
    state = await session.get(MailboxState, mailbox_id, populate_existing=True)
    if state is None:
        state = MailboxState(mailbox_id=mailbox_id, consecutive_failures=0)
        session.add(state)
        await session.flush()
    return state


async def pass_succeeded(session: AsyncSession, mailbox_id: str, cursor: str | None) -> bool:
    """Record a good pass; resolves the mailbox's incident if one is open. Returns whether
    an incident was resolved."""
    state = await mailbox_state(session, mailbox_id)
    failed_before = state.consecutive_failures
    state.cursor = cursor[:128] if cursor else state.cursor
    state.consecutive_failures = 0
    state.last_error = None
    state.last_success_at = utcnow()
    if failed_before == 0:
        return False
    return await incidents.resolve(
        session, fingerprint=f"mailbox:{mailbox_id}", actor=f"mailbox:{mailbox_id}"
    )


async def pass_failed(
    session: AsyncSession, mailbox_id: str, error: str, *, threshold: int
) -> tuple[int, bool]:
    """Record a failed pass. At `threshold` failures in a row a P2 incident opens (once: the
    incident's fingerprint dedups). Returns the failures in a row and whether one opened."""
    state = await mailbox_state(session, mailbox_id)
    state.consecutive_failures += 1
    state.last_error = error[:1000]
    failures = state.consecutive_failures
    if failures < threshold:
        return failures, False
    _, opened = await incidents.open_incident(
        session,
        fingerprint=f"mailbox:{mailbox_id}",
        severity="P2",
        title=f"Mailbox {mailbox_id} failing: {error[:150]}",
        source=f"mailbox:{mailbox_id}",
        details=f"{failures} triage passes in a row failed. Last error: {error[:1000]}",
    )
    return failures, opened
