"""Approvals: requests for a human decision, decided exactly once.

`request` creates the row and posts it (with Approve / Reject / Details buttons) to the
`approvals` feed through the outbox, dedup key `approval:<id>`. `decide` records one person's
vote and, when it settles the approval, sets the status with one conditional update and runs the
kind's effect (see `EFFECTS`) in the same transaction. `sweep` is the `approvals-expire` job:
a reminder at half time, then escalation to the next group or expiry.

What the rows cannot say (who the people are, the approvals feed, the time zone) comes from a
`Settings` the process stores on its `Database` with `configure`; every session carries it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from html import escape
from typing import Any

from aiogram.filters.callback_data import CallbackData
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.views.text import actor_name, usd, when
from storage import exec as commands
from storage import inbox, incidents, outbox, publications, tasks
from storage import usage as spend
from storage.db import Database, touch
from storage.models import (
    MAX_ID,
    Approval,
    ApprovalEvent,
    ApprovalVote,
    DbId,
    DeployRun,
    Outbox,
    utcnow,
)

log = logging.getLogger(__name__)

KINDS = ("deploy", "action", "publish", "incident_p0", "budget", "exec")

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"

APPROVE = "approve"
REJECT = "reject"

SYSTEM = "system:approvals"
TOP = {"role": "owner"}  # where escalation goes: the owners
ROLES = ("viewer", "operator", "owner")
# Kinds that only an owner may decide, whatever the approval's approvers say.
OWNER_ONLY = {"deploy": "deploys need an owner", "incident_p0": "P0 incidents need an owner"}

_SETTINGS = "fleet_approvals"


class ApprovalCb(CallbackData, prefix="ap"):
    """An approval button: `a` is y (approve), n (reject), d (details) or w (always allow, exec
    approvals only: handlers/exec.py); `id` the approval."""

    a: str
    id: DbId


@dataclass(frozen=True)
class Settings:
    """What deciding and posting need from the config."""

    people: Mapping[int, tuple[str, str]] = field(default_factory=dict)  # id -> (name, role)
    feed: outbox.Destination | None = None
    tz: tzinfo = UTC
    deadline: timedelta | None = None  # default for requests that give none
    on_timeout: str = "expire"
    notify_private: bool = False
    budgets: Mapping[str, float | None] = field(default_factory=dict)  # configured budgets

    def name(self, actor: str | None) -> str:
        """A person's name for "person:<id>", the agent id for "agent:<id>" (`actor_name`)."""
        return actor_name(actor, {pid: person[0] for pid, person in self.people.items()})


def configure(db: Database, settings: Settings) -> None:
    """Give every session of `db` the approval settings (the process does this at start)."""
    db.info[_SETTINGS] = settings


def settings_of(session: AsyncSession) -> Settings:
    found = session.info.get(_SETTINGS)
    return found if isinstance(found, Settings) else Settings()


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
    effect: object = None

    @property
    def decided(self) -> bool:
        return self.won and self.status != PENDING


# -- effects: what a settled approval does, by kind ---------------------------------------

Effect = Callable[[AsyncSession, Approval], Awaitable[object]]


async def _tell_task(session: AsyncSession, approval: Approval, *, wake: bool = True) -> object:
    """Comment the outcome on the requesting task; the comment wakes its agent, on approval
    and on rejection alike (with the reason). An agent that asked outside a task gets the
    outcome in its inbox, which wakes it too. `wake=False`: the agent reads it at its next
    run (an approved deploy: the deploy's report wakes it)."""
    settings = settings_of(session)
    body = f"Approval #{approval.id} ({approval.kind}: {summary(approval)}) " + outcome(
        approval, settings
    )
    actor = approval.decided_by or SYSTEM
    if approval.task_id is not None:
        await tasks.comment(session, approval.task_id, actor=actor, body=body, wake=wake)
    elif approval.requested_by.startswith("agent:"):
        await inbox.send(
            session,
            approval.requested_by.removeprefix("agent:"),
            kind="message",
            source=actor,
            body=body,
            dedup_key=f"approval:{approval.id}:{approval.status}",
            wake=wake,
        )
    return None


tell_task = _tell_task


async def _publish(session: AsyncSession, approval: Approval) -> object:
    """Approved: the publish worker publishes it once (storage.publications); the agent is
    woken by the outcome. Rejected or expired: the publication is rejected, the agent told."""
    # Looked up when called: storage.publications imports this module.
    return await publications.on_decided(session, approval)


async def _deploy(session: AsyncSession, approval: Approval) -> object:
    """Approved: queue exactly one deploy run (approval_id is unique: the idempotency key).
    The requesting task hears the decision either way; an approved deploy wakes its agent
    only with its report (storage.deploys), so the agent never acts on a deploy that has not
    run yet."""
    await _tell_task(session, approval, wake=approval.status != APPROVED)
    if approval.status != APPROVED:
        return None
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(DeployRun)
        .values(
            target=str(approval.payload.get("target", "")),
            approval_id=approval.id,
            ref=approval.payload.get("ref"),
            status="pending",
            steps=[],
            output_tail="",
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["approval_id"])
    )
    touch(session, "deploys")
    return None


async def _budget(session: AsyncSession, approval: Approval) -> object:
    """Approved: raise the agent's budget by the step and resume it (storage.usage).
    Rejected: the stop says so and loses its button; the agent stays paused."""
    if approval.status != APPROVED:
        await spend.close_stop(session, approval)
        return None
    return await spend.apply_raise(
        session,
        approval,
        by=approval.decided_by or SYSTEM,
        configured=settings_of(session).budgets,
        now=approval.decided_at or utcnow(),
    )


async def _incident_p0(session: AsyncSession, approval: Approval) -> object:
    """Approved: the incident becomes P0 and everyone is paged (storage.incidents)."""
    # Looked up when called: storage.incidents imports this module.
    await incidents.on_p0_decided(session, approval)
    return None


async def _exec(session: AsyncSession, approval: Approval) -> object:
    """Approved: queue the command to run exactly once (storage.exec; the agent hears the
    result once it ran). Rejected or expired: the agent is told at once, with the reason."""
    if approval.status != APPROVED:
        return await _tell_task(session, approval)
    # Looked up when called: storage.exec imports this module.
    return await commands.on_decided(session, approval)


# Called after the approval's status is set (approved, rejected or expired), in the same
# transaction.
EFFECTS: dict[str, Effect] = {
    "deploy": _deploy,
    "budget": _budget,
    "action": _tell_task,
    "publish": _publish,
    "incident_p0": _incident_p0,
    "exec": _exec,
}


# -- reading and rendering --------------------------------------------------------------------


def summary(approval: Approval) -> str:
    payload = approval.payload
    if approval.kind == "deploy":
        ref = f" at {payload['ref']}" if payload.get("ref") else ""
        return f"deploy {payload.get('target', '?')}{ref}"
    if approval.kind == "budget":
        try:
            by = usd(payload.get("step", "?"))
        except (ArithmeticError, ValueError):
            by = "?"
        return f"raise the budget of {payload.get('agent', '?')} by {by}"
    return str(payload.get("summary") or payload.get("title") or approval.kind)


def moment(at: datetime | None, settings: Settings, now: datetime | None = None) -> str:
    """`bot.views.text.when` in the configured zone ("14:02 CET" today, else "24 Nov 14:02")."""
    return when(at, settings.tz, now) if at is not None else "an unknown time"


def outcome(approval: Approval, settings: Settings) -> str:
    """How it was settled: "approved by Ana at 14:02", "rejected by Ben at 14:05: too risky"."""
    at = moment(approval.decided_at, settings)
    if approval.status == EXPIRED:
        return f"expired at {at} with no decision"
    text = f"{approval.status} by {settings.name(approval.decided_by)} at {at}"
    return f"{text}: {approval.reason}" if approval.reason else text


def who_decides(approval: Approval) -> str:
    people = approval.approvers.get("people")
    if people:
        return ", ".join(str(p) for p in people)
    role = approval.approvers.get("role", "owner")
    return "an owner" if role == "owner" else "an operator or owner"


def render(approval: Approval, settings: Settings, votes: Sequence[ApprovalVote] = ()) -> str:
    """The approval message (HTML): what is asked, by whom, the payload, who decides."""
    payload = approval.payload
    lines = [
        f"🟡 <b>Approval #{approval.id}</b> · {escape(approval.kind)}",
        f"<b>{escape(summary(approval))}</b>",
        f"Requested by {escape(settings.name(approval.requested_by))}"
        + (f" for task #{approval.task_id}" if approval.task_id else ""),
    ]
    if approval.kind == "deploy" and payload.get("command"):
        lines.append(f"Command: <code>{escape(str(payload['command'])[:300])}</code>")
    details = str(payload.get("details") or "")
    if approval.kind == "publish" and payload.get("text"):
        # The text itself is what is decided: shown whole up to 3,000 characters.
        shown = str(payload["text"])
        lines.append(f"<blockquote>{escape(shown)}</blockquote>")
        if len(details) > len(shown):
            lines.append(f"… {len(details) - len(shown)} more characters: press Details")
    elif details:
        lines.append(escape(details[:1500]))
    if approval.status == PENDING:
        # Who decides and by when matter only while it is open: a decided card shows the
        # decision instead.
        needs = who_decides(approval)
        if approval.required > 1:
            needs += f", {approval.required} different people"
        lines.append(f"Decides: {escape(needs)}")
        if approval.deadline is not None:
            lines.append(f"Deadline: {moment(approval.deadline, settings)}")
    approving = counted(approval, votes, settings)
    if approving and approval.status == PENDING:
        names = ", ".join(settings.name(f"person:{v.person_id}") for v in approving)
        lines.append(f"Approved so far ({len(approving)} of {approval.required}): {escape(names)}")
    if approval.escalated_at is not None and approval.status == PENDING:
        lines.append(f"⏫ Escalated at {moment(approval.escalated_at, settings)}")
    if approval.status != PENDING:
        mark = {APPROVED: "✅", REJECTED: "❌", EXPIRED: "⌛"}.get(approval.status, "▪️")
        lines[0] = lines[0].replace("🟡", mark, 1)
        said = outcome(approval, settings)
        lines.append(f"{mark} {escape(said[:1].upper() + said[1:])}")
    return "\n".join(lines)


def buttons(approval: Approval) -> list[list[outbox.Button]]:
    if approval.kind == "exec":
        # Always allow also adds an exec rule for this agent and this exact argv.
        return [
            [
                {"text": "Allow once", "callback_data": ApprovalCb(a="y", id=approval.id).pack()},
                {
                    "text": "Always allow",
                    "callback_data": ApprovalCb(a="w", id=approval.id).pack(),
                },
                {"text": "Deny", "callback_data": ApprovalCb(a="n", id=approval.id).pack()},
            ]
        ]
    return [
        [
            {"text": "Approve", "callback_data": ApprovalCb(a="y", id=approval.id).pack()},
            {"text": "Reject", "callback_data": ApprovalCb(a="n", id=approval.id).pack()},
            {"text": "Details", "callback_data": ApprovalCb(a="d", id=approval.id).pack()},
        ]
    ]


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
        select(Approval).where(Approval.status == PENDING).order_by(Approval.id).limit(limit)
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


async def record(
    session: AsyncSession, approval_id: int, kind: str, actor: str, body: str = ""
) -> ApprovalEvent:
    event = ApprovalEvent(approval_id=approval_id, kind=kind, actor=actor, body=body[:4000])
    session.add(event)
    await session.flush()
    return event


PROMPT = "prompt"  # the event of a reject prompt sent: its reply is the rejection


def _prompt_body(chat_id: int, message_id: int) -> str:
    return f"asked for a reason: chat {chat_id} message {message_id}"


async def prompted(
    session: AsyncSession, approval_id: int, *, person_id: int, chat_id: int, message_id: int
) -> None:
    """Record the reject prompt the bot sent to `person_id` (its chat and message): only a
    reply by that person to that very message rejects (see `prompt_of`). Text alone cannot
    say it: an agent can make the bot send any text."""
    await record(
        session, approval_id, PROMPT, f"person:{person_id}", _prompt_body(chat_id, message_id)
    )


async def prompt_of(
    session: AsyncSession, *, person_id: int, chat_id: int, message_id: int
) -> int | None:
    """The approval whose reject prompt to `person_id` is that message, or None."""
    found = await session.execute(
        select(ApprovalEvent.approval_id)
        .where(
            ApprovalEvent.kind == PROMPT,
            ApprovalEvent.actor == f"person:{person_id}",
            ApprovalEvent.body == _prompt_body(chat_id, message_id),
        )
        .order_by(ApprovalEvent.id.desc())
        .limit(1)
    )
    return found.scalar_one_or_none()


# -- creating ---------------------------------------------------------------------------------


async def request(
    session: AsyncSession,
    *,
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
    if on_timeout not in (None, "escalate", "expire"):
        raise ValueError(f"unknown on_timeout {on_timeout!r} (escalate or expire)")
    if idempotency_key is not None:
        found = await session.execute(
            select(Approval).where(Approval.idempotency_key == idempotency_key)
        )
        existing = found.scalar_one_or_none()
        if existing is not None:
            return existing
    settings = settings_of(session)
    if approvers is None:
        approvers = {"role": "owner" if kind in OWNER_ONLY else "operator"}
    if deadline is None and settings.deadline is not None and kind != "budget":
        deadline = utcnow() + settings.deadline
    approval = Approval(
        kind=kind,
        payload=payload,
        requested_by=requested_by,
        task_id=task_id,
        approvers=approvers,
        required=required,
        deadline=deadline,
        on_timeout=on_timeout or settings.on_timeout,
        idempotency_key=idempotency_key,
        status=PENDING,
        created_at=utcnow(),
    )
    session.add(approval)
    await session.flush()
    await record(session, approval.id, "request", requested_by, summary(approval))
    if announce:
        await _announce(session, approval, settings, copy_to)
    return approval


def may_decide(session: AsyncSession, approval: Approval, person_id: int) -> bool:
    """Whether this person may decide the approval as it stands (a press is checked again)."""
    return _refusal_for(approval, person_id, settings_of(session)) is None


def _approvers_of(approval: Approval, settings: Settings) -> list[int]:
    return [pid for pid in settings.people if _refusal_for(approval, pid, settings) is None]


async def _announce(
    session: AsyncSession, approval: Approval, settings: Settings, copy_to: int | None = None
) -> None:
    text = render(approval, settings)
    if settings.feed is None:
        log.warning("no approvals feed configured; approval #%d is not posted", approval.id)
    else:
        await outbox.enqueue(
            session,
            settings.feed,
            text,
            buttons=buttons(approval),
            dedup_key=f"approval:{approval.id}",
        )
    private = _approvers_of(approval, settings) if settings.notify_private else []
    if copy_to is not None and _refusal_for(approval, copy_to, settings) is None:
        private.append(copy_to)  # the same key as a notify_private copy: posted once
    for person_id in private:
        await outbox.enqueue(
            session,
            outbox.Destination(person_id),
            text,
            buttons=buttons(approval),
            dedup_key=f"approval:{approval.id}:dm:{person_id}",
        )


async def show_progress(session: AsyncSession, approval_id: int, lines: str, key: str) -> None:
    """Edit the approval's message to show, under the decision, how its effect is going
    (`lines`, HTML: a deploy's steps as they run). `key` makes each edit once-only."""
    approval = await get(session, approval_id)
    if approval is not None:
        await _show(session, approval, settings_of(session), key, footer=lines)


async def _show(
    session: AsyncSession, approval: Approval, settings: Settings, key: str, footer: str = ""
) -> None:
    """Edit the posted message (and private copies) to show the state now; a settled
    approval loses its buttons."""
    text = render(approval, settings, await votes_of(session, approval.id))
    if footer:
        text = f"{text}\n{footer}"
    keyboard = buttons(approval) if approval.status == PENDING else None
    targets: list[tuple[outbox.Destination, str]] = []
    if settings.feed is not None:
        targets.append((settings.feed, f"approval:{approval.id}"))
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


def _refusal_for(
    approval: Approval,
    person_id: int,
    settings: Settings,
    approvers: Mapping[str, Any] | None = None,
) -> str | None:
    """Why this person may not decide this approval, or None if they may. `approvers`: who
    decides now, when that differs from the row (see `_approvers_now`)."""
    approvers = approval.approvers if approvers is None else approvers
    person = settings.people.get(person_id)
    if person is None:
        return "you are not one of the fleet's people"
    name, role = person
    if role not in ROLES or role == "viewer":
        return "viewers cannot decide approvals"
    if approval.kind in OWNER_ONLY and role != "owner":
        return OWNER_ONLY[approval.kind]
    named = approvers.get("people")
    if named:
        allowed = {str(p).lower() for p in named}
        if name.lower() not in allowed and str(person_id) not in allowed:
            return f"this approval is for {', '.join(str(p) for p in named)}"
        return None
    needed = str(approvers.get("role", "operator"))
    if needed == "owner" and role != "owner":
        return f"{approval.kind} approval #{approval.id} needs an owner"
    return None


def _settled(approval: Approval, settings: Settings, now: datetime) -> str:
    if approval.status == PENDING:
        return f"approval #{approval.id} expired at {moment(approval.deadline, settings, now)}"
    if approval.status == EXPIRED:
        return f"approval #{approval.id} expired at {moment(approval.decided_at, settings, now)}"
    by = settings.name(approval.decided_by)
    return f"already {approval.status} by {by} at {moment(approval.decided_at, settings, now)}"


async def check(
    session: AsyncSession, approval_id: int, *, person_id: int, now: datetime | None = None
) -> str | None:
    """Why `person_id` may not vote on the approval now (None: they may). Reads only: the
    Reject button asks for a reason only when a rejection could count."""
    now = now or utcnow()
    settings = settings_of(session)
    approval = await get(session, approval_id)
    if approval is None:
        return f"there is no approval #{approval_id}"
    if approval.status != PENDING or _final(approval, now):
        return _settled(approval, settings, now)
    refusal = _refusal_for(approval, person_id, settings, _approvers_now(approval, now))
    if refusal is not None:
        return refusal
    mine = await session.execute(
        select(ApprovalVote).where(
            ApprovalVote.approval_id == approval_id, ApprovalVote.person_id == person_id
        )
    )
    vote = mine.scalar_one_or_none()
    if vote is not None:
        return f"you already voted {vote.vote} at {moment(vote.created_at, settings, now)}"
    return None


def _expired(approval: Approval, now: datetime) -> bool:
    return approval.deadline is not None and now >= approval.deadline


def _escalating(approval: Approval, now: datetime) -> bool:
    """Past its deadline with an escalation due that the sweep has not made yet."""
    return (
        _expired(approval, now)
        and approval.on_timeout == "escalate"
        and approval.escalated_at is None
        and approval.approvers != TOP  # owners have no next group: it expires (see `sweep`)
    )


def _final(approval: Approval, now: datetime) -> bool:
    """The deadline closed the approval: it expires, rather than escalating, at the sweep."""
    return _expired(approval, now) and not _escalating(approval, now)


def _approvers_now(approval: Approval, now: datetime) -> Mapping[str, Any]:
    """Who decides at `now`. Between a deadline that escalates and the sweep that records it,
    the owners already do: a press then is judged as it would be a minute later."""
    return TOP if _escalating(approval, now) else approval.approvers


def counted(
    approval: Approval,
    votes: Sequence[ApprovalVote],
    settings: Settings,
    approvers: Mapping[str, Any] | None = None,
) -> list[ApprovalVote]:
    """The approve votes toward the quorum: only of people who may decide now. After an
    escalation to the owners, the operators' earlier votes stay recorded but count no more."""
    return [
        v
        for v in votes
        if v.vote == APPROVE and _refusal_for(approval, v.person_id, settings, approvers) is None
    ]


async def decide(
    session: AsyncSession,
    approval_id: int,
    *,
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
    settings = settings_of(session)
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
    refusal = await check(session, approval_id, person_id=person_id, now=now)
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
    approving = len(counted(approval, votes, settings, _approvers_now(approval, now)))
    ignored = sum(1 for v in votes if v.vote == APPROVE) - approving
    body = vote + (f": {reason}" if reason else "")
    if vote == APPROVE and ignored:
        # The audit says why the count is lower than the votes: people who may no longer
        # decide (an escalation to the owners) voted earlier.
        body += f" ({approving} of {approval.required} counted; {ignored} no longer count)"
    await record(session, approval_id, "vote", actor, body)
    if vote == APPROVE and approving < approval.required:
        await _show(session, approval, settings, f"vote:{person_id}")
        log.info(
            "approval #%d: %s approved (%d of %d)",
            approval_id,
            person_name,
            approving,
            approval.required,
        )
        return Decision(True, PENDING, "", approval, approving)
    status = APPROVED if vote == APPROVE else REJECTED
    won = await _settle(session, approval, status, actor=actor, reason=reason, now=now)
    if not won:  # unreachable under the row lock; kept so a lost race can never decide twice
        approval = await get(session, approval_id)
        assert approval is not None
        return Decision(False, approval.status, _settled(approval, settings, now), approval)
    effect = await EFFECTS[approval.kind](session, approval) if approval.kind in EFFECTS else None
    log.info("approval #%d %s by %s", approval_id, status, person_name)
    return Decision(True, status, "", approval, approving, effect)


async def _settle(
    session: AsyncSession,
    approval: Approval,
    status: str,
    *,
    actor: str,
    reason: str | None,
    now: datetime,
) -> bool:
    """The one conditional update that decides an approval, its event and its message edit."""
    result = await session.execute(
        update(Approval)
        .where(Approval.id == approval.id, Approval.status == PENDING)
        .values(status=status, decided_by=actor, decided_at=now, reason=reason)
        .returning(Approval.id)
    )
    if result.first() is None:
        return False
    await session.refresh(approval)
    kind = "expiry" if status == EXPIRED else "decision"
    await record(session, approval.id, kind, actor, status + (f": {reason}" if reason else ""))
    await _show(session, approval, settings_of(session), status)
    return True


async def cancel(
    session: AsyncSession, approval_id: int, *, by: str, reason: str, now: datetime | None = None
) -> bool:
    """Withdraw a pending approval (its request is moot); no effect runs."""
    approval = await get(session, approval_id)
    if approval is None:
        return False
    return await _settle(
        session, approval, CANCELLED, actor=by, reason=reason, now=now or utcnow()
    )


# -- time: reminders, escalation, expiry (the approvals-expire job) ------------------------------


def _window_start(approval: Approval) -> datetime:
    return approval.escalated_at or approval.created_at


async def sweep(session: AsyncSession, now: datetime | None = None) -> list[str]:
    """Remind at half time, then escalate (once, to the owners, unless they were asked
    already) or expire. Returns what it did."""
    now = now or utcnow()
    settings = settings_of(session)
    done: list[str] = []
    found = await session.execute(
        select(Approval)
        .where(Approval.status == PENDING, Approval.deadline.is_not(None))
        .order_by(Approval.id)
    )
    for approval in list(found.scalars()):
        assert approval.deadline is not None
        if now >= approval.deadline:
            if (
                approval.on_timeout == "escalate"
                and approval.escalated_at is None
                and approval.approvers != TOP  # owners have no next group: it expires
            ):
                if await _escalate(session, approval, settings, now):
                    done.append(f"escalated #{approval.id}")
            elif await _settle(session, approval, EXPIRED, actor=SYSTEM, reason=None, now=now):
                if approval.kind in EFFECTS:
                    await EFFECTS[approval.kind](session, approval)
                log.info("approval #%d expired", approval.id)
                done.append(f"expired #{approval.id}")
            continue
        half = _window_start(approval) + (approval.deadline - _window_start(approval)) / 2
        if approval.reminded_at is None and now >= half:
            result = await session.execute(
                update(Approval)
                .where(
                    Approval.id == approval.id,
                    Approval.status == PENDING,
                    Approval.reminded_at.is_(None),
                )
                .values(reminded_at=now)
                .returning(Approval.id)
            )
            if result.first() is None:
                continue
            event = await record(session, approval.id, "reminder", SYSTEM, "half time")
            if settings.feed is not None:
                await outbox.enqueue(
                    session,
                    settings.feed,
                    f"⏰ Approval #{approval.id} ({escape(summary(approval))}) still waits for "
                    f"{escape(who_decides(approval))}; deadline "
                    f"{moment(approval.deadline, settings, now)}.",
                    dedup_key=f"approval:{approval.id}:remind:{event.id}",
                    reply_to=f"approval:{approval.id}",
                )
            done.append(f"reminded #{approval.id}")
    return done


async def _escalate(
    session: AsyncSession, approval: Approval, settings: Settings, now: datetime
) -> bool:
    """Hand the approval to owners, with a fresh window as long as the first one."""
    assert approval.deadline is not None
    window = approval.deadline - approval.created_at
    result = await session.execute(
        update(Approval)
        .where(
            Approval.id == approval.id,
            Approval.status == PENDING,
            Approval.escalated_at.is_(None),
        )
        .values(
            escalated_at=now,
            approvers=TOP,
            deadline=now + window,
            reminded_at=None,
        )
        .returning(Approval.id)
    )
    if result.first() is None:
        return False
    await session.refresh(approval)
    event = await record(session, approval.id, "escalation", SYSTEM, "to owners")
    await _show(session, approval, settings, f"escalated:{event.id}")
    if settings.feed is not None:
        await outbox.enqueue(
            session,
            settings.feed,
            f"⏫ Approval #{approval.id} ({escape(summary(approval))}) had no decision by its "
            f"deadline; escalated to the owners until {moment(approval.deadline, settings, now)}.",
            dedup_key=f"approval:{approval.id}:escalated:{event.id}",
            reply_to=f"approval:{approval.id}",
        )
    if approval.task_id is not None:
        await tasks.comment(
            session,
            approval.task_id,
            actor=SYSTEM,
            body=f"Approval #{approval.id} ({summary(approval)}) had no decision in time; "
            f"escalated to the owners, new deadline {moment(approval.deadline, settings, now)}.",
        )
    log.info("approval #%d escalated to owners", approval.id)
    return True


# -- deploy requests --------------------------------------------------------------------------

_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def valid_ref(ref: str) -> bool:
    """A commit, tag or version: no spaces, no shell metacharacters, at most 128 characters."""
    return bool(_REF.match(ref))


def deploy_payload(target: str, ref: str | None, command: str, reason: str = "") -> dict[str, Any]:
    return {"target": target, "ref": ref, "command": command, "details": reason}


async def deploy_in_flight(
    session: AsyncSession, target: str, *, idempotency_key: str | None = None
) -> str | None:
    """What keeps a new deploy of `target` from being requested: a deploy approval still
    pending, or a deploy run pending or running; None if nothing. The pending approval made
    with `idempotency_key` does not count: asking again with it is the same request."""
    stmt = select(Approval.id).where(Approval.kind == "deploy", Approval.status == PENDING)
    if idempotency_key is not None:
        stmt = stmt.where(
            (Approval.idempotency_key != idempotency_key) | Approval.idempotency_key.is_(None)
        )
    waiting = await session.execute(stmt.order_by(Approval.id))
    for approval_id in waiting.scalars():
        approval = await get(session, approval_id)
        if approval is not None and approval.payload.get("target") == target:
            return f"approval #{approval.id} for a deploy of {target} is pending"
    running = await session.execute(
        select(DeployRun.id, DeployRun.status, DeployRun.approval_id)
        .where(DeployRun.target == target, DeployRun.status.in_(("pending", "running")))
        .order_by(DeployRun.id)
        .limit(1)
    )
    row = running.first()
    if row is not None:
        return f"deploy run #{row[0]} of {target} (approval #{row[2]}) is {row[1]}"
    return None
