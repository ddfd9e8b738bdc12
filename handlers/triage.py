"""Buttons on urgent email (Create task, Mark read, Snooze 4h, Dismiss) and `/inbox`.

A press needs the operator role, is re-checked against the database and acts once: the
change is `agents.triage.Triage.act` (a conditional update in `storage.triage`); a second or
stale press answers who acted on the item and when. The winning press queues, in the same
transaction, the edit of the message (what was done, by whom; no buttons) to the outbox.
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config, Person, Role
from bot.views import triage as views
from bot.views.text import clip, display_name, esc, when
from bot.views.triage import ACTIONS, TriageCb
from handlers.common import OPERATOR, person_actor, sentence
from handlers.registry import Routes, command
from storage import triage as items
from storage.statuses import TriageStatus

if TYPE_CHECKING:
    from agents.triage import Triage

log = logging.getLogger(__name__)
router = Routes(__name__)


# The message is edited through the outbox, never by the press: a press on a message whose
# buttons are gone answers who acted on the item and when.
@router.callback_query(
    TriageCb.filter(F.action.in_(ACTIONS)), flags={**OPERATOR, "settled_press": True}
)
async def press(
    callback: CallbackQuery,
    callback_data: TriageCb,
    person: Person,
    config: Config,
    triage: Triage,
) -> None:
    done = ACTIONS[callback_data.action][1]
    outcome = await triage.act(
        callback_data.id,
        callback_data.action,
        person_actor(person),
        note=f"{done} by {person.name}",
    )
    item = outcome.item
    if not outcome.won:
        if item is not None and item.acted_by and item.status != TriageStatus.OPEN:
            who = display_name(item.acted_by, config)
            text = f"Already {item.status} by {who} at {when(item.acted_at, config.tz)}."
        else:
            text = sentence(outcome.reason)
        await callback.answer(clip(text, 200), show_alert=True)
        return
    if callback_data.action == "task" and item is not None and item.task_id is not None:
        done += f" (#{item.task_id} for the hub)"
    # The message itself is edited through the outbox (queued with the change).
    await callback.answer(done)


@command(router, "inbox", Role.viewer, usage="[mailbox]")
async def inbox(
    message: Message, command: CommandObject, session: AsyncSession, config: Config
) -> None:
    """Today's triaged email by verdict"""
    wanted = (command.args or "").strip().lower() or None
    known = [m.id for m in config.mailboxes]
    if not known:
        await message.answer("No mailboxes are configured ([[mailboxes]] in the config).")
        return
    if wanted is not None and wanted not in known:
        await message.answer(
            f'Unknown mailbox "{esc(clip(wanted, 40))}". The mailboxes are: '
            f"{esc(', '.join(known))}.\nUsage: /inbox [mailbox]"
        )
        return
    now = datetime.now(config.tz)
    start = datetime.combine(now.date(), time(0), tzinfo=config.tz)
    found = await items.decided_between(
        session, start, start + timedelta(days=1), mailbox=wanted, limit=5000
    )
    waiting = await items.count_undecided(session, wanted)
    await message.answer(views.inbox(found, waiting, wanted))
