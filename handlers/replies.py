"""Replies and plain text: a reply to a message of the bot acts on what that message shows, and
plain text in a private chat gets a short hint.

A reply to a task card (or a task's status message, or a run's line in the activity feed) is
an operator's comment on the task; a reply to an approval card is a note on the approval (an
approval event); a reply to an incident alert is a note on the incident; a reply to a "send
back" prompt, by its presser, sends the task back. What a message shows is looked up in
storage (`storage.links`), never read from its text: an agent can make the bot send any text.
Included after the feature routers: their replies (a reject reason) are handled first.
"""

from __future__ import annotations

import logging

from aiogram import Bot, F
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message

from agents.org import OrgChart
from bot.config import Person, Role
from bot.views.replies import HINT, DraftCb, hint_buttons, task_made
from bot.views.tasks import comment_added
from bot.views.text import clip, esc
from handlers.common import OPERATOR, person_actor, send_back, sentence, split_title
from handlers.registry import Routes
from storage import approval_queries, approvals, incidents, links, tasks
from storage.db import Database

log = logging.getLogger(__name__)
router = Routes(__name__)

TEXT_LIMIT = 4000


async def shown(message: Message, bot: Bot, db: Database) -> dict[str, links.Shown] | bool:
    """Filter: the message replies to a message of the bot that shows a task, an approval, an
    incident or a send-back prompt; gives the handler `target`."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != bot.id:
        return False
    async with db.session() as session:
        found = await links.shown_by(session, replied.chat.id, replied.message_id)
    return False if found is None else {"target": found}


@router.message(F.text, ~F.text.startswith("/"), shown, flags=OPERATOR)
async def reply_to_entity(
    message: Message, db: Database, person: Person, target: links.Shown
) -> None:
    text = (message.text or "").strip()[:TEXT_LIMIT]
    actor = person_actor(person)
    if target.kind == links.SENDBACK:
        if target.person_id != person.telegram_id:
            await message.reply("This prompt is for the person who pressed Send back.")
            return
        await message.reply(await send_back(db, target.entity_id, person, text))
        return
    async with db.claim() as session:
        if target.kind == links.TASK:
            outcome = await tasks.comment(session, target.entity_id, actor=actor, body=text)
            answer = (
                comment_added(target.entity_id, outcome.task.status, outcome.task.assignee)
                if outcome.won and outcome.task is not None
                else esc(sentence(outcome.reason))
            )
        elif target.kind == links.APPROVAL:
            if await approval_queries.get(session, target.entity_id) is None:
                answer = f"There is no approval #{target.entity_id}."
            else:
                await approvals.record(session, target.entity_id, "note", actor, text)
                answer = f"Note added to approval #{target.entity_id}."
        else:
            added = await incidents.note(session, target.entity_id, actor=actor, text=text)
            answer = (
                f"Note added to incident #{target.entity_id}."
                if added
                else f"There is no incident #{target.entity_id}."
            )
    await message.reply(answer)


@router.message(F.chat.type == "private", F.text, ~F.text.startswith("/"))
async def plain_text(message: Message, person: Person) -> None:
    """Plain text in the private chat: a hint, and for an operator a button that makes the
    text a task for the hub."""
    markup = hint_buttons() if person.role.allows(Role.operator) else None
    await message.reply(HINT, reply_markup=markup)


@router.callback_query(DraftCb.filter(F.a == "hub"), flags=OPERATOR)
async def press_make_task(
    callback: CallbackQuery, db: Database, person: Person, org: OrgChart
) -> None:
    hint = callback.message
    draft = hint.reply_to_message if isinstance(hint, Message) else None
    text = (draft.text or "").strip() if draft is not None else ""
    if draft is None or not text:
        await callback.answer(
            "The text this button belongs to is gone; send /new <text>.", show_alert=True
        )
        return
    hub = org.hub
    if hub is None:
        await callback.answer("No agent is the hub; use /assign <agent> <text>.", show_alert=True)
        return
    title, body = split_title(text)
    key = f"draft:{draft.chat.id}:{draft.message_id}"
    async with db.claim() as session:
        task = await tasks.create(
            session,
            title=title,
            body=body,
            assignee=hub.id,
            creator=person_actor(person),
            max_retries=hub.max_retries,
            idempotency_key=key,
        )
    if isinstance(hint, Message):
        try:
            await hint.edit_text(
                task_made(task.id, hub.id, task.title),
                reply_markup=None,
            )
        except TelegramBadRequest as err:  # pressed again: the hint shows the task already
            if "message is not modified" not in err.message:
                log.warning("could not edit hint %d: %s", hint.message_id, err.message)
    await callback.answer(clip(f"Task #{task.id} for {hub.id}", 200))


@router.callback_query(F.data.startswith("dr:"))
async def stale_draft_button(callback: CallbackQuery) -> None:
    await callback.answer("This button is out of date; send /new <text>.", show_alert=True)
