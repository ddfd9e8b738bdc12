"""/new, /assign, /tasks, /task, /comment, /cancel, /accept and /sendback: people give the fleet
work and follow it.

A /tasks listing pages with `TasksPage` buttons; a /task card acts with `TaskAction` buttons
(Cancel, Unblock, Reassign; Accept and Send back on a task in review), which need the operator
role. Send back asks for the reason as a reply to a prompt recorded in `message_links` (only
the presser's reply to that very message counts), as Reject does for approvals. Every change
goes through `storage.tasks`; a press that lost a race answers with the storage layer's reason.

Changes run in `Database.claim()` (the write lock from the first statement, on SQLite), not in
the update's deferred session: a read followed by a write in a deferred SQLite transaction
fails with "database is locked" at once when another writer committed in between (the run
worker does, all the time). The reply is sent after the commit, so it never claims a change
that was rolled back.

Over 400 lines because it is one feature with one Router: the task commands and the card's
buttons. Their texts and buttons are bot/views/tasks.py, the edit of a pressed message
handlers/edits.py, and what other handlers share handlers/common.py.
"""

from __future__ import annotations

import difflib
import logging
import re

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, ForceReply, Message
from sqlalchemy.ext.asyncio import AsyncSession

import bot.views.tasks as views
from agents.org import OrgChart
from bot.args import id_argument, no_such
from bot.config import AgentConfig, Config, Person, Role
from bot.views.buttons import View
from bot.views.tasks import TaskAction, TasksPage, comment_added
from bot.views.text import clip, esc
from handlers.common import (
    OPERATOR,
    person_actor,
    send_back,
    sentence,
    split_title,
    unknown_agent,
    usage,
)
from handlers.edits import edit
from handlers.registry import Routes, command
from storage import agents as agent_state
from storage import links, tasks
from storage.db import Database
from storage.models import Task
from storage.statuses import TaskStatus

log = logging.getLogger(__name__)
router = Routes(__name__)

ANSWER_LIMIT = 200  # answerCallbackQuery text


# -- /new and /assign ------------------------------------------------------------------------


async def _create(
    message: Message, db: Database, person: Person, agent: AgentConfig, text: str
) -> None:
    title, body = split_title(text)
    agent_id = agent.id
    async with db.claim() as session:
        task = await tasks.create(
            session,
            title=title,
            body=body,
            assignee=agent_id,
            creator=person_actor(person),
            max_retries=agent.max_retries,
        )
        paused = await agent_state.is_paused(session, agent_id)
    reply = f"Task #{task.id} for {esc(agent_id)}: {esc(task.title)}"
    if paused:
        reply += f"\n{esc(agent_id)} is paused; it starts on this after /resume {esc(agent_id)}."
    await message.answer(reply)


@command(router, "new", Role.operator, usage="<text>")
async def new_task(
    message: Message, command: CommandObject, db: Database, person: Person, org: OrgChart
) -> None:
    """Give the hub a task (first line: title; the rest: description)"""
    text = (command.args or "").strip()
    if not text:
        await message.answer(usage("new", "<text>") + "\nThe first line becomes the title.")
        return
    hub = org.hub
    if hub is None:
        await message.answer(
            "No agent is the hub (hub = true in [[agents]]); "
            "use /assign &lt;agent&gt; &lt;text&gt;."
        )
        return
    await _create(message, db, person, hub, text)


@command(router, "assign", Role.operator, usage="<agent> <text>")
async def assign(
    message: Message, command: CommandObject, db: Database, person: Person, org: OrgChart
) -> None:
    """Give an agent a task (first line: title; the rest: description)"""
    line = usage("assign", "<agent> <text>")
    parts = (command.args or "").strip().split(maxsplit=1)
    if not parts:
        await message.answer(line)
        return
    agent = org.get(parts[0].lower())
    if agent is None:
        await message.answer(unknown_agent(org, parts[0], line))
        return
    if len(parts) < 2 or not parts[1].strip():
        await message.answer(f"{line}\nWhat should {esc(agent.id)} do?")
        return
    await _create(message, db, person, agent, parts[1])


# -- /tasks ----------------------------------------------------------------------------------


def _scope(scope: str, org: OrgChart) -> tuple[str | None, tuple[str, ...]] | None:
    """(assignee, statuses) for a /tasks argument; None if it is neither agent nor status."""
    if not scope:
        return None, tasks.OPEN
    if scope in org:
        return scope, tasks.OPEN
    if scope in tasks.STATUSES:
        return None, (scope,)
    return None


async def _listing(session: AsyncSession, scope: str, page: int, org: OrgChart) -> View:
    found = _scope(scope, org)
    assert found is not None
    assignee, statuses = found
    page = max(0, min(page, views.MAX_PAGE))
    rows, total = await tasks.listing(
        session,
        assignee=assignee,
        statuses=statuses,
        offset=page * views.PAGE_SIZE,
        limit=views.PAGE_SIZE,
    )
    if page >= views.pages_of(total):  # tasks closed since the list was shown: the last page
        page = views.pages_of(total) - 1
        rows, total = await tasks.listing(
            session,
            assignee=assignee,
            statuses=statuses,
            offset=page * views.PAGE_SIZE,
            limit=views.PAGE_SIZE,
        )
    return views.listing(rows, total, page, scope, assignee, statuses)


@command(router, "tasks", Role.viewer, usage="[agent|status]")
async def list_tasks(
    message: Message, command: CommandObject, session: AsyncSession, org: OrgChart
) -> None:
    """Open tasks, 8 a page; or those of one agent, or in one status"""
    scope = (command.args or "").strip().lower()
    if _scope(scope, org) is None:
        close = difflib.get_close_matches(scope, [*org.ids, *tasks.STATUSES], n=3, cutoff=0.4)
        hint = f" Did you mean: {esc(', '.join(close))}?" if close else ""
        await message.answer(
            f'"{esc(clip(scope, 40))}" is neither an agent nor a status.{hint}\n'
            f"{usage('tasks', '[agent|status]')}\n"
            f"Statuses: {', '.join(tasks.STATUSES)}. "
            f"Agents: {esc(clip(', '.join(org.ids), 1000))}."
        )
        return
    view = await _listing(session, scope, 0, org)
    await message.answer(view.text, reply_markup=view.markup)


@router.callback_query(TasksPage.filter(), flags={"role": Role.viewer})
async def turn_page(
    callback: CallbackQuery, callback_data: TasksPage, session: AsyncSession, org: OrgChart
) -> None:
    if _scope(callback_data.scope, org) is None:
        await callback.answer("This list is out of date; send /tasks again.", show_alert=True)
        return
    view = await _listing(session, callback_data.scope, callback_data.page, org)
    await edit(callback, view)
    page = re.search(r"page (\d+/\d+)", view.text)
    await callback.answer(f"Page {page.group(1)}" if page else "No tasks left in this list")


# -- /task and its buttons -------------------------------------------------------------------


async def card(session: AsyncSession, task: Task, config: Config, org: OrgChart) -> View:
    """A /task card with the task's latest events."""
    events = await tasks.events(session, task.id, views.EVENTS_SHOWN)
    return views.card(task, events, config, org.ids)


@command(router, "task", Role.viewer, usage="<id>")
async def show_task(
    message: Message,
    command: CommandObject,
    session: AsyncSession,
    db: Database,
    config: Config,
    org: OrgChart,
) -> None:
    """One task: details, history, and buttons to cancel, unblock or reassign it"""
    task_id = await id_argument(message, command.args or "", "task", usage("task", "<id>"))
    if task_id is None:
        return
    task = await tasks.get(session, task_id)
    if task is None:
        await message.answer(no_such("task", task_id))
        return
    view = await card(session, task, config, org)
    sent = await message.answer(view.text, reply_markup=view.markup)
    # A reply to the card comments on the task (handlers.replies). Its own transaction: the
    # update's session has read, and a deferred SQLite transaction cannot write after that.
    async with db.session() as writing:
        await links.remember(
            writing,
            chat_id=sent.chat.id,
            message_id=sent.message_id,
            kind=links.TASK,
            entity_id=task.id,
        )


async def _settle(
    callback: CallbackQuery, outcome: tasks.Outcome, done: str, view: View | None
) -> None:
    """After the change committed: show the task as it is now, tell the presser the outcome."""
    if view is not None:
        await edit(callback, view)
    if outcome.won:
        await callback.answer(done)
    else:
        await callback.answer(clip(sentence(outcome.reason), ANSWER_LIMIT), show_alert=True)


async def _view_of(
    session: AsyncSession, task: Task | None, config: Config, org: OrgChart
) -> View | None:
    return await card(session, task, config, org) if task is not None else None


# A button that moves the task: (to, note, only_from, what the presser is told).
_MOVES: dict[str, tuple[str, str, tuple[str, ...] | None, str]] = {
    "accept": (TaskStatus.DONE, "accepted", (TaskStatus.IN_REVIEW,), "accepted: done"),
    "cancel": (TaskStatus.CANCELLED, "from /task", None, "cancelled"),
    "unblock": (TaskStatus.TODO, "unblocked", (TaskStatus.BLOCKED,), "unblocked: back to todo"),
}


@router.callback_query(TaskAction.filter(F.action.in_(_MOVES)), flags=OPERATOR)
async def press_move(
    callback: CallbackQuery,
    callback_data: TaskAction,
    db: Database,
    person: Person,
    config: Config,
    org: OrgChart,
) -> None:
    to, note, only_from, done = _MOVES[callback_data.action]
    task_id = callback_data.id
    async with db.claim() as session:
        if callback_data.action == "accept":
            outcome = await tasks.accept(session, task_id, actor=person_actor(person))
        else:
            outcome = await tasks.transition(
                session, task_id, to, actor=person_actor(person), note=note, only_from=only_from
            )
        view = await _view_of(session, outcome.task, config, org)
    await _settle(callback, outcome, f"Task #{task_id} {done}", view)


@router.callback_query(TaskAction.filter(F.action == "sendback"), flags=OPERATOR)
async def press_sendback(
    callback: CallbackQuery,
    callback_data: TaskAction,
    db: Database,
    person: Person,
    config: Config,
    org: OrgChart,
) -> None:
    """Ask for the reason first; the task goes back when the reply comes (handlers.replies)."""
    task_id = callback_data.id
    async with db.session() as session:
        task = await tasks.get(session, task_id)
        view = await _view_of(session, task, config, org)
    if task is None or task.status != TaskStatus.IN_REVIEW:
        reason = (
            f"task #{task_id} is {task.status}, not in_review"
            if task is not None
            else f"there is no task #{task_id}"
        )
        await _settle(callback, tasks.Outcome(False, task, reason), "", view)
        return
    if isinstance(callback.message, Message):
        sent = await callback.message.answer(
            views.sendback_prompt(person.telegram_id, person.name, task_id),
            reply_markup=ForceReply(
                force_reply=True, selective=True, input_field_placeholder="reason"
            ),
        )
        async with db.session() as session:
            await links.remember(
                session,
                chat_id=sent.chat.id,
                message_id=sent.message_id,
                kind=links.SENDBACK,
                entity_id=task_id,
                person_id=person.telegram_id,
            )
    await callback.answer("Reply with the reason to send it back.")


@router.callback_query(TaskAction.filter(F.action == "reassign"), flags=OPERATOR)
async def press_reassign(
    callback: CallbackQuery,
    callback_data: TaskAction,
    session: AsyncSession,
    config: Config,
    org: OrgChart,
) -> None:
    task_id = callback_data.id
    task = await tasks.get(session, task_id)
    if task is None or task.status not in tasks.OPEN:
        reason = (
            f"task #{task_id} is {task.status}; it cannot be reassigned"
            if task is not None
            else f"there is no task #{task_id}"
        )
        view = await _view_of(session, task, config, org)
        await _settle(callback, tasks.Outcome(False, task, reason), "", view)
        return
    await edit(callback, View("", views.picker(task, org.ids)), markup_only=True)
    await callback.answer(f"Reassign task #{task_id} (now {task.assignee}) to…")


@router.callback_query(TaskAction.filter(F.action == "to"), flags=OPERATOR)
async def press_reassign_to(
    callback: CallbackQuery,
    callback_data: TaskAction,
    db: Database,
    person: Person,
    config: Config,
    org: OrgChart,
) -> None:
    task_id, agent_id = callback_data.id, callback_data.agent
    if agent_id not in org:
        await callback.answer(f'There is no agent "{clip(agent_id, 40)}".', show_alert=True)
        return
    async with db.claim() as session:
        task = await tasks.get(session, task_id)
        if task is not None and task.assignee == agent_id:
            reason = f"task #{task_id} is already assigned to {agent_id}"
            outcome = tasks.Outcome(False, task, reason)
        else:
            outcome = await tasks.reassign(session, task_id, agent_id, actor=person_actor(person))
        view = await _view_of(session, outcome.task, config, org)
    await _settle(callback, outcome, f"Task #{task_id} reassigned to {agent_id}", view)


@router.callback_query(TaskAction.filter(F.action == "card"), flags=OPERATOR)
async def press_back(
    callback: CallbackQuery,
    callback_data: TaskAction,
    session: AsyncSession,
    config: Config,
    org: OrgChart,
) -> None:
    task = await tasks.get(session, callback_data.id)
    if task is None:
        await callback.answer(no_such("task", callback_data.id), show_alert=True)
        return
    await edit(callback, await card(session, task, config, org))
    await callback.answer(f"Task #{task.id} is {task.status}")


# -- /comment and /cancel --------------------------------------------------------------------


@command(router, "comment", Role.operator, usage="<id> <text>")
async def add_comment(
    message: Message, command: CommandObject, db: Database, person: Person
) -> None:
    """Comment on a task (its agent is woken to read it)"""
    line = usage("comment", "<id> <text>")
    parts = (command.args or "").strip().split(maxsplit=1)
    if len(parts) < 2:
        await message.answer(line)
        return
    task_id = await id_argument(message, parts[0], "task", line)
    if task_id is None:
        return
    async with db.claim() as session:
        outcome = await tasks.comment(
            session, task_id, actor=person_actor(person), body=parts[1].strip()
        )
    if not outcome.won or outcome.task is None:
        await message.answer(esc(sentence(outcome.reason)))
        return
    await message.answer(comment_added(task_id, outcome.task.status, outcome.task.assignee))


@command(router, "cancel", Role.operator, usage="<id> [reason]")
async def cancel(message: Message, command: CommandObject, db: Database, person: Person) -> None:
    """Cancel an open task"""
    line = usage("cancel", "<id> [reason]")
    parts = (command.args or "").strip().split(maxsplit=1)
    if not parts:
        await message.answer(line)
        return
    task_id = await id_argument(message, parts[0], "task", line)
    if task_id is None:
        return
    note = parts[1].strip() if len(parts) > 1 else ""
    async with db.claim() as session:
        outcome = await tasks.transition(
            session, task_id, TaskStatus.CANCELLED, actor=person_actor(person), note=note
        )
    if outcome.won:
        await message.answer(f"Task #{task_id} cancelled: no run will pick it up again.")
    else:
        await message.answer(esc(sentence(outcome.reason)))


@command(router, "accept", Role.operator, usage="<id>")
async def accept(message: Message, command: CommandObject, db: Database, person: Person) -> None:
    """Accept a task in review: done (its agent is told)"""
    line = usage("accept", "<id>")
    parts = (command.args or "").split()
    if len(parts) != 1:
        await message.answer(line)
        return
    task_id = await id_argument(message, parts[0], "task", line)
    if task_id is None:
        return
    async with db.claim() as session:
        outcome = await tasks.accept(session, task_id, actor=person_actor(person))
    if outcome.won:
        await message.answer(f"Task #{task_id} accepted: done.")
    else:
        await message.answer(esc(sentence(outcome.reason)))


@command(router, "sendback", Role.operator, usage="<id> <reason>")
async def sendback(message: Message, command: CommandObject, db: Database, person: Person) -> None:
    """Send a task in review back to its agent, saying why"""
    line = usage("sendback", "<id> <reason>")
    parts = (command.args or "").strip().split(maxsplit=1)
    if not parts:
        await message.answer(line)
        return
    task_id = await id_argument(message, parts[0], "task", line)
    if task_id is None:
        return
    if len(parts) < 2 or not parts[1].strip():
        await message.answer(f"{line}\nWhat should the agent change?")
        return
    await message.answer(await send_back(db, task_id, person, parts[1]))
