"""Coding agents in Telegram: /queue <agent> (the nightly queue in order, with buttons to move
a task up or take it out).

The buttons are for operators; the queue's order and changes live in storage.queue. The Stop
button on a coding run's running line is the Stop of every run (handlers.agents); "cs:" is the
data of the coding runs' own Stop button of earlier versions, answered as not valid.
"""

from __future__ import annotations

import logging

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, Message

from agents.org import OrgChart
from bot.config import Config, Person, Role
from bot.views.coding import SHOWN, QueueCb, queue_view
from bot.views.text import clip
from handlers.common import OPERATOR, person_actor, sentence, unknown_agent, usage
from handlers.registry import Routes, command
from storage import queue as task_queue
from storage import tasks
from storage.db import Database

log = logging.getLogger(__name__)
router = Routes(__name__)


@command(router, "queue", Role.viewer, usage="<agent>")
async def show_queue(
    message: Message,
    command: CommandObject,
    db: Database,
    org: OrgChart,
    config: Config,
    person: Person,
) -> None:
    """A coding agent's nightly queue, most urgent first"""
    agent_id = (command.args or "").strip().lower()
    if not agent_id:
        await message.answer(usage("queue", "<agent>"))
        return
    if agent_id not in org:
        await message.answer(unknown_agent(org, clip(agent_id, 40), usage("queue", "<agent>")))
        return
    async with db.session() as session:
        found = await task_queue.listing(session, agent_id, limit=SHOWN + 1)
    text, keyboard = queue_view(agent_id, found, config, buttons=person.role.allows(Role.operator))
    await message.answer(text, reply_markup=keyboard)


@router.callback_query(QueueCb.filter(F.a.in_({"u", "o"})), flags=OPERATOR)
async def press_queue(
    callback: CallbackQuery,
    callback_data: QueueCb,
    db: Database,
    org: OrgChart,
    config: Config,
    person: Person,
) -> None:
    if callback_data.agent not in org:
        await callback.answer("That agent is no longer in the config.", show_alert=True)
        return
    actor = person_actor(person)
    async with db.claim() as session:
        if callback_data.a == "u":
            outcome = await task_queue.move_up(session, callback_data.agent, callback_data.task)
        else:
            task = await tasks.get(session, callback_data.task)
            if task is None or task.assignee != callback_data.agent:
                outcome = tasks.Outcome(False, task, f"task #{callback_data.task} is not queued")
            else:
                outcome = await task_queue.take_out(session, callback_data.task, actor=actor)
        found = await task_queue.listing(session, callback_data.agent, limit=SHOWN + 1)
    if not outcome.won:
        await callback.answer(
            clip(sentence(outcome.reason or "nothing changed"), 200), show_alert=True
        )
        return
    done = "moved up" if callback_data.a == "u" else "taken out of the queue (now backlog)"
    log.info("task #%d %s by %s", callback_data.task, done, person.name)
    await callback.answer(f"Task #{callback_data.task} {done}.")
    text, keyboard = queue_view(callback_data.agent, found, config, buttons=True)
    if isinstance(callback.message, Message):
        await callback.message.edit_text(text, reply_markup=keyboard)


@router.callback_query(F.data.startswith(("cq:", "cs:")))
async def forged_button(callback: CallbackQuery) -> None:
    await callback.answer("This button is not valid; nothing was changed.", show_alert=True)
