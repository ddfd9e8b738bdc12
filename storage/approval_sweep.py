"""The `approvals-expire` job: approvals that wait past half their window are reminded of,
and past their deadline are escalated (once, to the owners) or expire (the kind's effect
runs, as for a decision). Each step is one conditional update, so two sweeps (two nodes)
never remind, escalate or expire twice.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.views import approvals as view
from storage import outbox, tasks
from storage.approval_kinds import SYSTEM, Kinds
from storage.approval_policy import TOP, ApprovalPolicy
from storage.approvals import record, settle, show
from storage.models import Approval, utcnow
from storage.statuses import ApprovalStatus
from storage.transition import change

log = logging.getLogger(__name__)


def _window_start(approval: Approval) -> datetime:
    return approval.escalated_at or approval.created_at


async def sweep(
    session: AsyncSession, policy: ApprovalPolicy, kinds: Kinds, now: datetime | None = None
) -> list[str]:
    """Remind at half time, then escalate (once, to the owners, unless they were asked
    already) or expire. Returns what it did."""
    now = now or utcnow()
    done: list[str] = []
    found = await session.execute(
        select(Approval)
        .where(Approval.status == ApprovalStatus.PENDING, Approval.deadline.is_not(None))
        .order_by(Approval.id)
    )
    for approval in list(found.scalars()):
        assert approval.deadline is not None
        if now >= approval.deadline:
            if policy.escalates(approval):
                if await _escalate(session, approval, policy, now):
                    done.append(f"escalated #{approval.id}")
                continue
            settled = await settle(
                session,
                approval,
                ApprovalStatus.EXPIRED,
                policy,
                actor=SYSTEM,
                reason=None,
                now=now,
            )
            if settled.won and settled.row is not None:
                await kinds.settled(session, settled.row, policy)
                log.info("approval #%d expired", approval.id)
                done.append(f"expired #{approval.id}")
            continue
        half = _window_start(approval) + (approval.deadline - _window_start(approval)) / 2
        if (
            approval.reminded_at is None
            and now >= half
            and await _remind(session, approval, policy, now)
        ):
            done.append(f"reminded #{approval.id}")
    return done


async def _remind(
    session: AsyncSession, approval: Approval, policy: ApprovalPolicy, now: datetime
) -> bool:
    """The half-time reminder, once (`reminded_at` is set by its conditional update)."""

    async def then(row: Approval) -> None:
        event = await record(session, row.id, "reminder", SYSTEM, "half time")
        if policy.feed is not None:
            await outbox.enqueue(
                session,
                policy.feed,
                view.reminder(row, policy, now),
                dedup_key=f"approval:{row.id}:remind:{event.id}",
                reply_to=f"approval:{row.id}",
            )

    reminded = await change(
        session,
        Approval,
        approval.id,
        {"reminded_at": now},
        only_from=(ApprovalStatus.PENDING,),
        where=(Approval.reminded_at.is_(None),),
        then=then,
    )
    return reminded.won


async def _escalate(
    session: AsyncSession, approval: Approval, policy: ApprovalPolicy, now: datetime
) -> bool:
    """Hand the approval to owners, with a fresh window as long as the first one."""
    assert approval.deadline is not None
    window = approval.deadline - approval.created_at

    async def then(row: Approval) -> None:
        event = await record(session, row.id, "escalation", SYSTEM, "to owners")
        await show(session, row, policy, f"escalated:{event.id}")
        if policy.feed is not None:
            await outbox.enqueue(
                session,
                policy.feed,
                view.escalated(row, policy, now),
                dedup_key=f"approval:{row.id}:escalated:{event.id}",
                reply_to=f"approval:{row.id}",
            )
        if row.task_id is not None:
            await tasks.comment(
                session, row.task_id, actor=SYSTEM, body=view.escalated_note(row, policy, now)
            )

    escalated = await change(
        session,
        Approval,
        approval.id,
        {
            "escalated_at": now,
            "approvers": dict(TOP),
            "deadline": now + window,
            "reminded_at": None,
        },
        only_from=(ApprovalStatus.PENDING,),
        where=(Approval.escalated_at.is_(None),),
        then=then,
    )
    if escalated.won:
        log.info("approval #%d escalated to owners", approval.id)
    return escalated.won
