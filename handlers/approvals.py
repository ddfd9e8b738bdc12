"""Approvals in Telegram: the Approve / Reject / Details buttons, /approvals, /approve,
/reject, /deploy and /audit.

Every press and command goes to `storage.approvals.decide`, which re-checks everything from
the database; these handlers only parse, call it and answer. Reject by button asks for the
reason with ForceReply; the prompt sent is recorded (chat, message, presser: an approval event),
and only the presser's reply to that very message rejects. The text of the message replied to
proves nothing: an agent can make the bot send any text.

A little over 400 lines: one feature, one Router (the buttons and commands of approvals);
the texts are bot/views/approvals.py and the decisions storage.approvals.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from aiogram import Bot, F
from aiogram.filters import CommandObject
from aiogram.types import (
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from bot.args import INVALID_BUTTON, id_argument, no_such, parse_count
from bot.config import Config, Person, Role
from bot.views import approvals as view
from bot.views.approvals import REJECT_PROMPT, REJECT_PROMPT_PATTERN, ApprovalCb
from bot.views.text import clip, esc, one_line, split_html, when, zone_note
from handlers.common import person_actor, sentence, usage
from handlers.registry import Routes, command
from integrations.deploy import shown_command
from storage import approval_queries, approvals, deploys, outbox
from storage.approval_kinds import Kinds
from storage.approval_policy import APPROVE, REJECT, ApprovalPolicy
from storage.db import Database
from storage.statuses import ApprovalStatus

log = logging.getLogger(__name__)
router = Routes(__name__)

OPERATOR = {"role": Role.operator}
VIEWER = {"role": Role.viewer}
# The buttons act on the approval in their data, never on the message they are on (the
# outbox edits the approval's own message), so a press on a message whose buttons were
# removed by the decision is answered from the database: who decided and when.
OPERATOR_SETTLED = {**OPERATOR, "settled_press": True}
VIEWER_SETTLED = {**VIEWER, "settled_press": True}
MAX_AUDIT = 50


def _answer_text(decision: approvals.Decision) -> str:
    if not decision.won:
        return clip(sentence(decision.refusal), 200)
    approval = decision.approval
    assert approval is not None
    if decision.status == ApprovalStatus.PENDING:
        return f"Your approval is counted: {decision.votes} of {approval.required}."
    if decision.status == ApprovalStatus.APPROVED and approval.kind == "deploy":
        return f"Approved #{approval.id}: the deploy is queued."
    return f"{decision.status.capitalize()} #{approval.id}."


async def _decide(
    db: Database,
    approval_id: int,
    person: Person,
    vote: str,
    policy: ApprovalPolicy,
    kinds: Kinds,
    reason: str | None = None,
) -> approvals.Decision:
    async with db.claim() as session:
        decision = await approvals.decide(
            session,
            approval_id,
            policy=policy,
            kinds=kinds,
            person_id=person.telegram_id,
            person_name=person.name,
            vote=vote,
            reason=reason,
        )
    if not decision.won:
        log.info(
            "approval #%d: %s's %s refused: %s", approval_id, person.name, vote, decision.refusal
        )
    return decision


# -- buttons ----------------------------------------------------------------------------------


@router.callback_query(ApprovalCb.filter(F.a == "y"), flags=OPERATOR_SETTLED)
async def press_approve(
    callback: CallbackQuery,
    callback_data: ApprovalCb,
    db: Database,
    person: Person,
    approval_policy: ApprovalPolicy,
    approval_kinds: Kinds,
) -> None:
    decision = await _decide(
        db, callback_data.id, person, APPROVE, approval_policy, approval_kinds
    )
    if decision.approval is None:
        await callback.answer(no_such("approval", callback_data.id), show_alert=True)
        return
    await callback.answer(_answer_text(decision), show_alert=not decision.won)


@router.callback_query(ApprovalCb.filter(F.a == "n"), flags=OPERATOR_SETTLED)
async def press_reject(
    callback: CallbackQuery,
    callback_data: ApprovalCb,
    db: Database,
    person: Person,
    approval_policy: ApprovalPolicy,
) -> None:
    """Ask for the reason first; the rejection counts when the reply comes (and is checked
    again then)."""
    async with db.session() as session:
        exists = await approval_queries.get(session, callback_data.id) is not None
        refusal = await approvals.check(
            session, callback_data.id, policy=approval_policy, person_id=person.telegram_id
        )
    if not exists:
        await callback.answer(no_such("approval", callback_data.id), show_alert=True)
        return
    if refusal is not None:
        await callback.answer(clip(sentence(refusal), 200), show_alert=True)
        return
    message = callback.message
    if not isinstance(message, Message):  # out of the bot's reach: no prompt can go there
        await callback.answer(
            f"Reject it with /reject {callback_data.id} <reason>.", show_alert=True
        )
        return
    who = f'<a href="tg://user?id={person.telegram_id}">{esc(person.name)}</a>'
    sent = await message.answer(
        REJECT_PROMPT.format(who=who, id=callback_data.id),
        reply_markup=ForceReply(
            force_reply=True, selective=True, input_field_placeholder="reason"
        ),
    )
    async with db.claim() as session:
        await approvals.prompted(
            session,
            callback_data.id,
            person_id=person.telegram_id,
            chat_id=sent.chat.id,
            message_id=sent.message_id,
        )
    await callback.answer("Reply with the reason to reject.")


@router.callback_query(ApprovalCb.filter(F.a == "d"), flags=VIEWER_SETTLED)
async def press_details(
    callback: CallbackQuery,
    callback_data: ApprovalCb,
    db: Database,
    approval_policy: ApprovalPolicy,
) -> None:
    async with db.session() as session:
        approval = await approval_queries.get(session, callback_data.id)
        votes = await approval_queries.votes_of(session, callback_data.id) if approval else []
    if approval is None:
        await callback.answer(no_such("approval", callback_data.id), show_alert=True)
        return
    s = approval_policy
    parts = [
        f"#{approval.id} {approval.kind}: {view.summary(approval)}",
        approval.status,
        f"requested by {s.name(approval.requested_by)}",
    ]
    details = str(approval.payload.get("details") or "")
    shown = str(approval.payload.get("text") or "")
    if approval.kind == "publish" and len(details) > len(shown) and s.feed is not None:
        # The rest of a long text does not fit an alert: it follows the approval as a reply.
        async with db.session() as session:
            await outbox.enqueue(
                session,
                s.feed,
                esc(details[len(shown) :]),
                dedup_key=f"approval:{approval.id}:rest",
                reply_to=f"approval:{approval.id}",
            )
        details = "the rest of the text follows the approval"
    if details:
        parts.append(details)
    parts += [f"{s.name(f'person:{v.person_id}')}: {v.vote}" for v in votes]
    await callback.answer(clip(" · ".join(parts), 200), show_alert=True)


@router.callback_query(F.data.startswith("ap:"))
async def forged_button(callback: CallbackQuery, person: Person) -> None:
    """Approval button data that does not parse: forged or from an incompatible version."""
    await _forged(callback, person)


async def _forged(callback: CallbackQuery, person: Person) -> None:
    log.warning(
        "refused approval button with invalid data %r from %s (%d)",
        one_line(callback.data or "", 80),
        person.name,
        person.telegram_id,
    )
    await callback.answer(INVALID_BUTTON, show_alert=True)


async def our_prompt(message: Message, bot: Bot, db: Database) -> dict[str, int] | bool:
    """Filter: the message replies to a reject prompt the bot sent to its author; gives the
    handler `approval_id`. Any other reply (to a look-alike text an agent had the bot send,
    or to someone else's prompt) is not a rejection and goes on to the other handlers."""
    prompt = message.reply_to_message
    if prompt is None or prompt.from_user is None or prompt.from_user.id != bot.id:
        return False
    if message.from_user is None:
        return False
    async with db.session() as session:
        approval_id = await approval_queries.prompt_of(
            session,
            person_id=message.from_user.id,
            chat_id=prompt.chat.id,
            message_id=prompt.message_id,
        )
    return False if approval_id is None else {"approval_id": approval_id}


@router.message(
    F.reply_to_message.text.regexp(REJECT_PROMPT_PATTERN, mode="search"),
    our_prompt,
    flags=OPERATOR,
)
async def reject_reason(
    message: Message,
    db: Database,
    person: Person,
    approval_id: int,
    approval_policy: ApprovalPolicy,
    approval_kinds: Kinds,
) -> None:
    """The presser's reply to the reject prompt they were sent: the rejection."""
    reason = (message.text or "").strip()
    if not reason or reason.startswith("/"):
        await message.reply("A rejection needs a reason: reply to the prompt with it.")
        return
    decision = await _decide(
        db, approval_id, person, REJECT, approval_policy, approval_kinds, reason
    )
    await message.reply(esc(_answer_text(decision)))


# -- commands ---------------------------------------------------------------------------------


@command(router, "approvals", Role.viewer)
async def list_approvals(message: Message, db: Database, approval_policy: ApprovalPolicy) -> None:
    """List pending approvals, with their buttons"""
    async with db.session() as session:
        waiting = await approval_queries.pending(session, limit=10)
    if not waiting:
        await message.answer("No approvals are pending.")
        return
    rows = [
        [InlineKeyboardButton.model_validate(b) for b in row]
        for row in view.pending_buttons(waiting)
    ]
    text = "Pending approvals:\n" + "\n".join(view.line(a, approval_policy) for a in waiting)
    await message.answer(text, reply_markup=InlineKeyboardMarkup(inline_keyboard=rows))


@command(router, "approve", Role.operator, usage="<id>")
async def approve(
    message: Message,
    command: CommandObject,
    db: Database,
    person: Person,
    approval_policy: ApprovalPolicy,
    approval_kinds: Kinds,
) -> None:
    """Approve a pending approval"""
    line = usage("approve", "<id>")
    parts = (command.args or "").split()
    if len(parts) != 1:
        await message.answer(line)
        return
    approval_id = await id_argument(message, parts[0], "approval", line)
    if approval_id is None:
        return
    decision = await _decide(db, approval_id, person, APPROVE, approval_policy, approval_kinds)
    await message.answer(esc(_answer_text(decision)))


@command(router, "reject", Role.operator, usage="<id> <reason>")
async def reject(
    message: Message,
    command: CommandObject,
    db: Database,
    person: Person,
    approval_policy: ApprovalPolicy,
    approval_kinds: Kinds,
) -> None:
    """Reject a pending approval, saying why"""
    line = usage("reject", "<id> <reason>")
    parts = (command.args or "").strip().split(maxsplit=1)
    if len(parts) != 2:
        await message.answer(line)
        return
    approval_id = await id_argument(message, parts[0], "approval", line)
    if approval_id is None:
        return
    decision = await _decide(
        db, approval_id, person, REJECT, approval_policy, approval_kinds, parts[1]
    )
    await message.answer(esc(_answer_text(decision)))


@command(router, "deploy", Role.operator, usage="<target> [ref]")
async def request_deploy(
    message: Message,
    command: CommandObject,
    db: Database,
    person: Person,
    config: Config,
    approval_policy: ApprovalPolicy,
) -> None:
    """Request a deploy of a configured target (an owner approves)"""
    line = usage("deploy", "<target> [ref]")
    parts = (command.args or "").split()
    known = ", ".join(d.id for d in config.deploys) or "none configured"
    if not 1 <= len(parts) <= 2:
        await message.answer(f"{line}\nTargets: {esc(known)}.")
        return
    target = next((d for d in config.deploys if d.id == parts[0].lower()), None)
    if target is None:
        await message.answer(
            f'Unknown deploy target "{esc(clip(parts[0], 40))}". Targets: {esc(known)}.\n{line}'
        )
        return
    ref = parts[1] if len(parts) == 2 else None
    if ref is not None and not deploys.valid_ref(ref):
        await message.answer(
            f"{esc(clip(ref, 40))} is not a commit, tag or version (letters, digits and ._/-, "
            f"at most 128).\n{line}"
        )
        return
    # Asked in a private chat by someone who may decide: the request comes here too, with its
    # buttons, so an owner need not go to the group to approve their own deploy.
    private = person.telegram_id if message.chat.type == "private" else None
    # A redelivered update must not ask twice.
    key = f"deploy:{message.chat.id}:{message.message_id}"
    here = False
    async with db.claim() as session:
        busy = await deploys.in_flight(session, target.id, idempotency_key=key)
        if busy is None:
            approvers, required = approval_policy.deploy_approvers(target.id)
            approval = await approvals.request(
                session,
                policy=approval_policy,
                kind="deploy",
                payload=deploys.payload(target.id, ref, shown_command(config, target)),
                requested_by=person_actor(person),
                approvers=approvers,
                required=required,
                idempotency_key=key,
                copy_to=private,
            )
            here = private is not None and approval_policy.may_decide(approval, private)
    if busy is not None:
        await message.answer(f"Not requested: {esc(busy)}. Wait for its report.")
        return
    where = "the approvals feed" if config.feed("approvals") else "nowhere (no approvals feed)"
    await message.answer(
        f"Deploy of <b>{esc(target.id)}</b>{' at ' + esc(ref) if ref else ''} requested: "
        f"approval #{approval.id}, posted to {where}."
        + (
            " You may decide it here too: the request is posted in this chat as well."
            if here
            else ""
        )
    )


@command(router, "audit", Role.operator, usage="[n]")
async def audit(
    message: Message, command: CommandObject, db: Database, approval_policy: ApprovalPolicy
) -> None:
    """The last approval decisions and deploys, with who and when"""
    word = (command.args or "").strip()
    limit = parse_count(word, 1, MAX_AUDIT) if word else 15
    if limit is None:
        await message.answer(
            f"{esc(clip(word, 40))} is not a number from 1 to {MAX_AUDIT}.\n"
            + usage("audit", "[n]")
        )
        return
    s = approval_policy
    async with db.session() as session:
        trail = await approval_queries.audit(session, limit)
        runs = await deploys.recent(session, 5)
    if not trail and not runs:
        await message.answer("Nothing to audit yet.")
        return
    lines = [f"<b>Approvals</b> · {zone_note(s.tz)}"]
    for event in trail:
        at = when(event.created_at, s.tz, zone=False)
        body = f": {esc(one_line(event.body, 80))}" if event.body else ""
        lines.append(
            f"{at} #{event.approval_id} {esc(event.kind)} by {esc(s.name(event.actor))}{body}"
        )
    if runs:
        lines.append("<b>Deploys</b>")
    for run in runs:
        took = ""
        if run.started_at and run.finished_at:
            took = f", {(run.finished_at - run.started_at) / timedelta(seconds=1):.1f} s"
        started = when(run.started_at or run.created_at, s.tz, zone=False)
        lines.append(
            f"run #{run.id} {esc(run.target)} {esc(run.status)} (approval #{run.approval_id}, "
            f"{started}{took})"
        )
    # 50 events of long bodies pass Telegram's 4096 characters: sent in parts.
    for part in split_html("\n".join(lines)):
        await message.answer(part)
