"""Coding agents in Telegram: /queue <agent> (the nightly queue in order, with buttons to move
a task up or take it out) and the Stop button on a coding run's running line.

The buttons are for operators; the queue's order and changes live in storage.queue, the
stopping in agents.process_adapter (it kills the CLI's process group; the run ends cancelled).
"""

from __future__ import annotations

import logging

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from agents.org import OrgChart
from bot.config import Config, Person, Role
from bot.views.text import clip, esc
from handlers.registry import Routes, command
from handlers.tasks import sentence, unknown_agent, usage
from storage import queue as task_queue
from storage import tasks
from storage.db import Database
from storage.models import Task

log = logging.getLogger(__name__)
router = Routes(__name__)

OPERATOR = {"role": Role.operator}
SHOWN = 15  # tasks listed (and given buttons) in /queue


class QueueCb(CallbackData, prefix="cq"):
    """A queue button: a = "u" (move up) or "o" (out of the queue)."""

    a: str
    agent: str
    task: int


class StopCb(CallbackData, prefix="cs"):
    """The Stop button of a coding run."""

    run: int


def stop_button(run_id: int) -> list[list[dict[str, str]]]:
    """The running line's keyboard, as outbox buttons."""
    return [[{"text": "⏹ Stop", "callback_data": StopCb(run=run_id).pack()}]]


def queue_view(
    agent_id: str, found: list[Task], config: Config, *, buttons: bool
) -> tuple[str, InlineKeyboardMarkup | None]:
    agent = next((a for a in config.agents if a.id == agent_id), None)
    when = agent.queue.cron if agent is not None and agent.queue is not None else None
    head = f"<b>Queue of {esc(agent_id)}</b>" + (
        f" (runs at <code>{esc(when)}</code>, {agent.queue.max_tasks} a night)"
        if when and agent is not None and agent.queue is not None
        else " (no nightly queue configured: todo tasks start when assigned)"
    )
    if not found:
        return f"{head}\nNo todo tasks.", None
    names = {v: k for k, v in tasks.PRIORITIES.items()}
    lines = [head]
    lines += [
        f"{n}. #{t.id} {esc(clip(t.title, 80))} · {names.get(t.priority, 'normal')}"
        for n, t in enumerate(found[:SHOWN], 1)
    ]
    if len(found) > SHOWN:
        lines.append(f"… and {len(found) - SHOWN} more")
    if not buttons:
        return "\n".join(lines), None
    rows = [
        [
            InlineKeyboardButton(
                text=f"⬆ #{t.id}", callback_data=QueueCb(a="u", agent=agent_id, task=t.id).pack()
            ),
            InlineKeyboardButton(
                text=f"✖ #{t.id} out",
                callback_data=QueueCb(a="o", agent=agent_id, task=t.id).pack(),
            ),
        ]
        for t in found[:SHOWN]
    ]
    return "\n".join(lines), InlineKeyboardMarkup(inline_keyboard=rows)


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
    actor = f"person:{person.telegram_id}"
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


@router.callback_query(StopCb.filter(), flags=OPERATOR)
async def press_stop(callback: CallbackQuery, callback_data: StopCb, person: Person) -> None:
    # Imported here: the adapter imports this module for the button.
    from agents import process_adapter

    if not process_adapter.stop(callback_data.run, by=person.name):
        await callback.answer(f"Run {callback_data.run} is not running (finished already?).")
        return
    log.info("coding run %d stopped by %s", callback_data.run, person.name)
    await callback.answer(f"Stopping run {callback_data.run}: its processes are killed.")


@router.callback_query(F.data.startswith(("cq:", "cs:")))
async def forged_button(callback: CallbackQuery) -> None:
    await callback.answer("This button is not valid; nothing was changed.", show_alert=True)
