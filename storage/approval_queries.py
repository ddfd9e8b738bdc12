"""Reading approvals: one by id, its votes and audit events, the pending ones, and the
approval whose reject prompt a reply answers. Reads only; the transitions are in
storage/approvals.py.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import MAX_ID, Approval, ApprovalEvent, ApprovalVote
from storage.statuses import ApprovalStatus

PROMPT = "prompt"  # the event of a reject prompt sent: its reply is the rejection


def prompt_body(chat_id: int, message_id: int) -> str:
    """The body of the event that records a reject prompt sent to that chat and message."""
    return f"asked for a reason: chat {chat_id} message {message_id}"


async def get(session: AsyncSession, approval_id: int) -> Approval | None:
    if not 0 < approval_id <= MAX_ID:
        return None
    return await session.get(Approval, approval_id, populate_existing=True)


async def votes_of(session: AsyncSession, approval_id: int) -> list[ApprovalVote]:
    found = await session.execute(
        select(ApprovalVote)
        .where(ApprovalVote.approval_id == approval_id)
        .order_by(ApprovalVote.id)
    )
    return list(found.scalars())


async def pending(session: AsyncSession, limit: int = 20) -> list[Approval]:
    found = await session.execute(
        select(Approval)
        .where(Approval.status == ApprovalStatus.PENDING)
        .order_by(Approval.id)
        .limit(limit)
    )
    return list(found.scalars())


async def audit(session: AsyncSession, limit: int = 20) -> list[ApprovalEvent]:
    """The newest audit events (decisions, votes, reminders, expiries, deploys), newest last."""
    found = await session.execute(
        select(ApprovalEvent).order_by(ApprovalEvent.id.desc()).limit(limit)
    )
    return list(reversed(found.scalars().all()))


async def events(session: AsyncSession, approval_id: int) -> list[ApprovalEvent]:
    found = await session.execute(
        select(ApprovalEvent)
        .where(ApprovalEvent.approval_id == approval_id)
        .order_by(ApprovalEvent.id)
    )
    return list(found.scalars())


async def prompt_of(
    session: AsyncSession, *, person_id: int, chat_id: int, message_id: int
) -> int | None:
    """The approval whose reject prompt to `person_id` is that message, or None."""
    found = await session.execute(
        select(ApprovalEvent.approval_id)
        .where(
            ApprovalEvent.kind == PROMPT,
            ApprovalEvent.actor == f"person:{person_id}",
            ApprovalEvent.body == prompt_body(chat_id, message_id),
        )
        .order_by(ApprovalEvent.id.desc())
        .limit(1)
    )
    return found.scalar_one_or_none()
