"""Approvals: requests for a human decision, decided exactly once.

`request` creates the row and posts it (with Approve / Reject / Details buttons, see
bot.views.approvals) to the `approvals` feed through the outbox, dedup key `approval:<id>`.
`decide` records one person's vote and, when it settles the approval, sets the status with one
conditional update and runs the kind's effect in the same transaction. The `approvals-expire`
job (reminders, escalation, expiry) is storage.approval_sweep; reads are
storage.approval_queries.

This module knows no kind: what a settled approval does is a `Kind` its owner defines
(storage.deploys, storage.usage, storage.incidents, storage.exec, storage.publications; `Told`
for kinds that only tell the requester), collected in a `Kinds` registry the process builds at
start. Who may decide is an `ApprovalPolicy` (storage.approval_policy). Both are passed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.views import approvals as view
from storage import outbox
from storage.approval_kinds import SYSTEM, Kinds, Outcome
from storage.approval_policy import APPROVE, KINDS, ON_TIMEOUT, REJECT, ApprovalPolicy
from storage.approval_queries import PROMPT, get, prompt_body, votes_of
from storage.models import MAX_ID, Approval, ApprovalEvent, ApprovalVote, Outbox, utcnow
from storage.statuses import ApprovalStatus
from storage.transition import Changed, change

log = logging.getLogger(__name__)

# The vote words and the system's actor name, for callers of `decide` and of the audit.
__all__ = ["APPROVE", "REJECT", "SYSTEM"]


@dataclass(frozen=True)
class Decision:
    """The outcome of one press or command.

    `won` says this call changed something: a vote was counted (`status` still pending when a
    committee needs more) or the approval was decided (`status` is the new one). When `won` is
    False, `refusal` says precisely why ("already approved by Ana at 14:02")."""

    won: bool
    status: str
    refusal: str = ""
    approval: Approval | None = None
    votes: int = 0
    effect: Outcome | None = None

    @property
    def decided(self) -> bool:
        return self.won and self.status != ApprovalStatus.PENDING


# -- recording ------------------------------------------------------------------------------


async def record(
    session: AsyncSession, approval_id: int, kind: str, actor: str, body: str = ""
) -> ApprovalEvent:
    event = ApprovalEvent(approval_id=approval_id, kind=kind, actor=actor, body=body[:4000])
    session.add(event)
    await session.flush()
    return event


async def prompted(
    session: AsyncSession, approval_id: int, *, person_id: int, chat_id: int, message_id: int
) -> None:
    """Record the reject prompt the bot sent to `person_id` (its chat and message): only a
    reply by that person to that very message rejects (see `prompt_of`). Text alone cannot
    say it: an agent can make the bot send any text."""
    await record(
        session, approval_id, PROMPT, f"person:{person_id}", prompt_body(chat_id, message_id)
    )


# -- creating ---------------------------------------------------------------------------------


async def request(
    session: AsyncSession,
    *,
    policy: ApprovalPolicy,
    kind: str,
    payload: dict[str, Any],
    requested_by: str,
    task_id: int | None = None,
    deadline: datetime | None = None,
    idempotency_key: str | None = None,
    approvers: dict[str, Any] | None = None,
    required: int = 1,
    on_timeout: str | None = None,
    announce: bool = True,
    copy_to: int | None = None,
) -> Approval:
    """Create a pending approval and post it to the `approvals` feed (`announce=False`: the
    caller posts its own message, as a budget stop does). With a used `idempotency_key`,
    return the existing one and post nothing. `copy_to`: the private chat of the person who
    asked; if they may decide it, the request is posted there too, with its buttons, and
    edited with the feed's message (a person need not go to the group to decide).

    Deploys and P0 incidents are decided by owners; other kinds by operators and owners,
    unless `approvers` names a role ({"role": "owner"}) or people ({"people": ["Ana"]})."""
    if kind not in KINDS:
        raise ValueError(f"unknown approval kind {kind!r}")
    if required < 1:
        raise ValueError("required must be at least 1")
    if on_timeout is not None and on_timeout not in ON_TIMEOUT:
        raise ValueError(f"unknown on_timeout {on_timeout!r} (escalate or expire)")
    if idempotency_key is not None:
        found = await session.execute(
            select(Approval).where(Approval.idempotency_key == idempotency_key)
        )
        existing = found.scalar_one_or_none()
        if existing is not None:
            return existing
    now = utcnow()
    approval = Approval(
        kind=kind,
        payload=payload,
        requested_by=requested_by,
        task_id=task_id,
        approvers=policy.approvers_for(kind) if approvers is None else approvers,
        required=required,
        deadline=deadline if deadline is not None else policy.deadline_from(kind, now),
        on_timeout=on_timeout or policy.on_timeout,
        idempotency_key=idempotency_key,
        status=ApprovalStatus.PENDING,
        created_at=now,
    )
    session.add(approval)
    await session.flush()
    await record(session, approval.id, "request", requested_by, view.summary(approval))
    if announce:
        await _announce(session, approval, policy, copy_to)
    return approval


async def _announce(
    session: AsyncSession, approval: Approval, policy: ApprovalPolicy, copy_to: int | None = None
) -> None:
    text = view.render(approval, policy)
    if policy.feed is None:
        log.warning("no approvals feed configured; approval #%d is not posted", approval.id)
    else:
        await outbox.enqueue(
            session,
            policy.feed,
            text,
            buttons=view.buttons(approval),
            dedup_key=f"approval:{approval.id}",
        )
    private = policy.deciders(approval) if policy.notify_private else []
    if copy_to is not None and policy.may_decide(approval, copy_to):
        private.append(copy_to)  # the same key as a notify_private copy: posted once
    for person_id in private:
        await outbox.enqueue(
            session,
            outbox.Destination(person_id),
            text,
            buttons=view.buttons(approval),
            dedup_key=f"approval:{approval.id}:dm:{person_id}",
        )


async def show_progress(
    session: AsyncSession, approval_id: int, lines: str, key: str, *, policy: ApprovalPolicy
) -> None:
    """Edit the approval's message to show, under the decision, how its effect is going
    (`lines`, HTML: a deploy's steps as they run). `key` makes each edit once-only."""
    approval = await get(session, approval_id)
    if approval is not None:
        await show(session, approval, policy, key, footer=lines)


async def show(
    session: AsyncSession,
    approval: Approval,
    policy: ApprovalPolicy,
    key: str,
    footer: str = "",
) -> None:
    """Edit the posted message (and private copies) to show the state now; a settled
    approval loses its buttons."""
    approving = policy.counted(approval, await votes_of(session, approval.id))
    text = view.render(approval, policy, approving)
    if footer:
        text = f"{text}\n{footer}"
    keyboard = view.buttons(approval) if approval.status == ApprovalStatus.PENDING else None
    targets: list[tuple[outbox.Destination, str]] = []
    if policy.feed is not None:
        targets.append((policy.feed, f"approval:{approval.id}"))
    # Every private copy that was posted, not the approvers of now: after an escalation the
    # operators' copies would otherwise keep live buttons and an outdated text.
    prefix = f"approval:{approval.id}:dm:"
    copies = await session.execute(
        select(Outbox.dedup_key).where(
            Outbox.dedup_key.like(f"{prefix}%"), Outbox.edit_of.is_(None)
        )
    )
    for (dedup_key,) in copies:
        person = dedup_key.removeprefix(prefix)
        if person.lstrip("-").isdigit():  # the copy itself, not one of its edits or replies
            targets.append((outbox.Destination(int(person)), dedup_key))
    for to, original in targets:
        posted = await session.execute(select(Outbox.id).where(Outbox.dedup_key == original))
        if posted.first() is None:
            continue  # never announced here (a budget stop has its own message)
        await outbox.enqueue(
            session,
            to,
            text,
            buttons=keyboard,
            dedup_key=f"{original}:{key}",
            edit_of=original,
        )


# -- deciding ---------------------------------------------------------------------------------


async def check(
    session: AsyncSession,
    approval_id: int,
    *,
    policy: ApprovalPolicy,
    person_id: int,
    now: datetime | None = None,
) -> str | None:
    """Why `person_id` may not vote on the approval now (None: they may). Reads only: the
    Reject button asks for a reason only when a rejection could count."""
    now = now or utcnow()
    approval = await get(session, approval_id)
    if approval is None:
        return f"there is no approval #{approval_id}"
    if approval.status != ApprovalStatus.PENDING or policy.final(approval, now):
        return view.settled(approval, policy, now)
    refusal = policy.refusal(approval, person_id, policy.approvers_now(approval, now))
    if refusal is not None:
        return refusal
    mine = await session.execute(
        select(ApprovalVote).where(
            ApprovalVote.approval_id == approval_id, ApprovalVote.person_id == person_id
        )
    )
    vote = mine.scalar_one_or_none()
    if vote is not None:
        return f"you already voted {vote.vote} at {view.moment(vote.created_at, policy, now)}"
    return None


async def decide(
    session: AsyncSession,
    approval_id: int,
    *,
    policy: ApprovalPolicy,
    kinds: Kinds,
    person_id: int,
    person_name: str,
    vote: str,
    reason: str | None = None,
    now: datetime | None = None,
    kind: str | None = None,
) -> Decision:
    """Record `person_id`'s vote and settle the approval when it decides it: a rejection
    decides at once; approvals decide when `required` different people approved.

    Everything is re-checked from the database (the person's role, a vote already given, the
    approval still pending and not past its deadline); a refused call changes nothing. Run it
    in `Database.claim()`: the approval row is locked first, so concurrent presses serialise
    and exactly one of them decides. `kind`, when given, must be the approval's kind (a
    budget button decides only budget approvals)."""
    if vote not in (APPROVE, REJECT):
        raise ValueError(f"vote must be {APPROVE!r} or {REJECT!r}, not {vote!r}")
    now = now or utcnow()
    actor = f"person:{person_id}"
    if not 0 < approval_id <= MAX_ID:
        return Decision(False, "", f"there is no approval #{approval_id}")
    locked = await session.execute(
        select(Approval)
        .where(Approval.id == approval_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    approval = locked.scalar_one_or_none()
    if approval is None or (kind is not None and approval.kind != kind):
        what = f"{kind} approval" if kind else "approval"
        return Decision(False, "", f"there is no {what} #{approval_id}")
    refusal = await check(session, approval_id, policy=policy, person_id=person_id, now=now)
    if refusal is not None:
        return Decision(False, approval.status, refusal, approval)
    reason = (reason or "").strip()[:1000] or None
    session.add(
        ApprovalVote(
            approval_id=approval_id, person_id=person_id, vote=vote, reason=reason, created_at=now
        )
    )
    await session.flush()
    votes = await votes_of(session, approval_id)
    approving = len(policy.counted(approval, votes, policy.approvers_now(approval, now)))
    ignored = sum(1 for v in votes if v.vote == APPROVE) - approving
    body = vote + (f": {reason}" if reason else "")
    if vote == APPROVE and ignored:
        # The audit says why the count is lower than the votes: people who may no longer
        # decide (an escalation to the owners) voted earlier.
        body += f" ({approving} of {approval.required} counted; {ignored} no longer count)"
    await record(session, approval_id, "vote", actor, body)
    if vote == APPROVE and approving < approval.required:
        await show(session, approval, policy, f"vote:{person_id}")
        log.info(
            "approval #%d: %s approved (%d of %d)",
            approval_id,
            person_name,
            approving,
            approval.required,
        )
        return Decision(True, ApprovalStatus.PENDING, "", approval, approving)
    status = ApprovalStatus.APPROVED if vote == APPROVE else ApprovalStatus.REJECTED
    settled = await settle(session, approval, status, policy, actor=actor, reason=reason, now=now)
    if not settled.won or settled.row is None:
        # Unreachable under the row lock; kept so a lost race can never decide twice.
        current = settled.row or approval
        return Decision(False, current.status, view.settled(current, policy, now), current)
    approval = settled.row
    effect = await kinds.settled(session, approval, policy)
    log.info("approval #%d %s by %s", approval_id, status, person_name)
    return Decision(True, status, "", approval, approving, effect)


async def settle(
    session: AsyncSession,
    approval: Approval,
    status: ApprovalStatus,
    policy: ApprovalPolicy,
    *,
    actor: str,
    reason: str | None,
    now: datetime,
) -> Changed[Approval]:
    """The one conditional update that decides an approval, its event and its message edit."""

    async def then(row: Approval) -> None:
        kind = "expiry" if status == ApprovalStatus.EXPIRED else "decision"
        await record(session, row.id, kind, actor, status + (f": {reason}" if reason else ""))
        await show(session, row, policy, status)

    return await change(
        session,
        Approval,
        approval.id,
        {"status": status, "decided_by": actor, "decided_at": now, "reason": reason},
        only_from=(ApprovalStatus.PENDING,),
        then=then,
    )


async def cancel(
    session: AsyncSession,
    approval_id: int,
    *,
    policy: ApprovalPolicy,
    by: str,
    reason: str,
    now: datetime | None = None,
) -> bool:
    """Withdraw a pending approval (its request is moot); no effect runs."""
    approval = await get(session, approval_id)
    if approval is None:
        return False
    settled = await settle(
        session,
        approval,
        ApprovalStatus.CANCELLED,
        policy,
        actor=by,
        reason=reason,
        now=now or utcnow(),
    )
    return bool(settled.won)
