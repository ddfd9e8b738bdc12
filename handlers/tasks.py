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
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import tzinfo
from typing import Annotated

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

import bot.views.text as view
from agents.org import OrgChart
from bot.args import id_argument, no_such
from bot.config import AgentConfig, Config, Person, Role
from bot.views.text import TELEGRAM_LIMIT, clip, esc, one_line, plain, visible_len, when
from handlers.registry import Routes, command
from storage import agents as agent_state
from storage import links, tasks
from storage.db import Database
from storage.models import DbId, Task, TaskEvent

log = logging.getLogger(__name__)
router = Routes(__name__)

PAGE_SIZE = 8
MAX_PAGE = 10**6
TITLE_LIMIT = 200
BODY_LIMIT = 1500
EVENTS_SHOWN = 10
ANSWER_LIMIT = 200  # answerCallbackQuery text
OPERATOR = {"role": Role.operator}


class TasksPage(CallbackData, prefix="tp"):
    """A page of a /tasks listing. `scope` is what /tasks was given: "", an agent or a status.
    (Not named `filter`: that would shadow `CallbackData.filter`.)"""

    scope: str
    page: Annotated[int, Field(ge=0, le=MAX_PAGE)]


class TaskAction(CallbackData, prefix="ta"):
    """A button on a /task card: cancel, unblock, reassign (shows the agents), to (reassign to
    `agent`), card (back to the card), accept, sendback (asks for the reason)."""

    action: str
    id: DbId
    agent: str = ""


# -- helpers (also used by handlers.agents) --------------------------------------------------


def usage(name: str, args: str) -> str:
    return f"Usage: /{name} {esc(args)}"


def unknown_agent(org: OrgChart, name: str, usage_line: str) -> str:
    close = org.closest(name)
    hint = (
        f" Did you mean: {esc(', '.join(close))}?"
        if close
        else f" The agents are: {esc(clip(', '.join(org.ids), 1000))}."
    )
    return f'Unknown agent "{esc(clip(name, 40))}".{hint}\n{usage_line}'


def sentence(reason: str) -> str:
    """A storage reason ("task #3 is done; ...") as a sentence for a person."""
    text = reason[:1].upper() + reason[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def actor_name(actor: str | None, config: Config) -> str:
    """`bot.views.text.actor_name` with the config's people: "person:1001" -> "Ana"."""
    return view.actor_name(actor, {p.telegram_id: p.name for p in config.people})


def priority_name(priority: int) -> str:
    return next((k for k, v in tasks.PRIORITIES.items() if v == priority), str(priority))


def person_actor(person: Person) -> str:
    return f"person:{person.telegram_id}"


# -- /new and /assign ------------------------------------------------------------------------


def split_title(text: str) -> tuple[str, str]:
    """Title = the first line (at most 200 characters), body = the rest. A longer first line
    is cut in the title and kept whole in the body, so nothing the person wrote is lost."""
    first, _, rest = text.strip().partition("\n")
    first = first.strip()
    if len(first) <= TITLE_LIMIT:
        return first, rest.strip()
    return first[: TITLE_LIMIT - 1] + "…", text.strip()


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


@dataclass(frozen=True)
class View:
    """A message as it should look: text and buttons."""

    text: str
    markup: InlineKeyboardMarkup | None = None


async def _listing(session: AsyncSession, scope: str, page: int, org: OrgChart) -> View:
    found = _scope(scope, org)
    assert found is not None
    assignee, statuses = found
    page = max(0, min(page, MAX_PAGE))
    rows, total = await tasks.listing(
        session, assignee=assignee, statuses=statuses, offset=page * PAGE_SIZE, limit=PAGE_SIZE
    )
    pages = max(1, -(-total // PAGE_SIZE))
    if page >= pages:  # tasks closed since the list was shown: go to the last page
        page = pages - 1
        rows, total = await tasks.listing(
            session,
            assignee=assignee,
            statuses=statuses,
            offset=page * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        pages = max(1, -(-total // PAGE_SIZE))
    what = f"{statuses[0]} tasks" if len(statuses) == 1 else "open tasks"
    if assignee is not None:
        what += f" of {assignee}"
    if total == 0:
        return View(f"No {esc(what)}.")
    lines = [f"<b>{esc(what[:1].upper() + what[1:])}</b>: {total} · page {page + 1}/{pages}"]
    for task in rows:
        priority = "" if task.priority == 2 else f" · {priority_name(task.priority)}"
        lines.append(
            f"#{task.id} {task.status} · {esc(task.assignee)}{priority} · "
            f"{esc(one_line(task.title, 90))}"
        )
    lines.append("/task &lt;id&gt; shows one task.")
    buttons: list[InlineKeyboardButton] = []
    if page > 0:
        data = TasksPage(scope=scope, page=page - 1).pack()
        buttons.append(InlineKeyboardButton(text="« Prev", callback_data=data))
    if page + 1 < pages:
        data = TasksPage(scope=scope, page=page + 1).pack()
        buttons.append(InlineKeyboardButton(text="Next »", callback_data=data))
    markup = InlineKeyboardMarkup(inline_keyboard=[buttons]) if buttons else None
    return View("\n".join(lines), markup)


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
    await _edit(callback, view)
    page = re.search(r"page (\d+/\d+)", view.text)
    await callback.answer(f"Page {page.group(1)}" if page else "No tasks left in this list")


# -- /task and its buttons -------------------------------------------------------------------


def _event_line(event: TaskEvent, config: Config) -> str:
    at = when(event.created_at, config.tz, zone=False)
    change = ""
    if event.to_status:
        change = f" {event.from_status or ''}→{event.to_status}"
    body = f": {one_line(event.body, 80)}" if event.body else ""
    actor = clip(actor_name(event.actor, config), 40)
    return esc(f"{at} {actor} {event.kind}{change}{body}")


async def card(session: AsyncSession, task: Task, config: Config, org: OrgChart) -> View:
    """A /task card: its text (under Telegram's message limit) and its buttons."""
    tz: tzinfo = config.tz
    head = [
        f"<b>Task #{task.id}</b> · {task.status}",
        f"<b>{esc(one_line(task.title, TITLE_LIMIT))}</b>",
        f"Assignee: {esc(task.assignee)} · priority {priority_name(task.priority)}"
        + (f" · retries {task.retries}/{task.max_retries}" if task.retries else ""),
        f"Created by {esc(clip(actor_name(task.creator, config), 40))} "
        f"at {when(task.created_at, tz)}",
        f"Updated {when(task.updated_at, tz)}",
    ]
    if task.parent_id is not None:
        head.append(f"Parent: #{task.parent_id}")
    if task.status == tasks.BLOCKED and task.blocked_reason:
        head.append(f"Blocked: {esc(clip(task.blocked_reason, 300))}")
    body = [f"\n{esc(clip(task.body.strip(), BODY_LIMIT))}"] if task.body.strip() else []
    history = [_event_line(e, config) for e in await tasks.events(session, task.id, EVENTS_SHOWN)]
    while True:
        title = "<b>History</b>" + (" (latest)" if len(history) >= EVENTS_SHOWN else "")
        text = "\n".join([*head, *body, "", title, *history])
        if visible_len(text) <= TELEGRAM_LIMIT - 96 or not history:
            return View(text, card_buttons(task, org))
        history = history[1:]


def card_buttons(task: Task, org: OrgChart) -> InlineKeyboardMarkup | None:
    if task.status not in tasks.OPEN:
        return None
    row = [_button("Cancel", "cancel", task.id)]
    if task.status == tasks.IN_REVIEW:
        row = [_button("Accept", "accept", task.id), _button("Send back", "sendback", task.id)]
        row.append(_button("Cancel", "cancel", task.id))
    if task.status == tasks.BLOCKED:
        row.append(_button("Unblock", "unblock", task.id))
    if any(agent != task.assignee for agent in org.ids):
        row.append(_button("Reassign", "reassign", task.id))
    return InlineKeyboardMarkup(inline_keyboard=[row])


def _picker(task: Task, org: OrgChart) -> InlineKeyboardMarkup:
    others = [_button(a, "to", task.id, a) for a in org.ids if a != task.assignee]
    rows = [others[i : i + 3] for i in range(0, len(others), 3)]
    rows.append([_button("« Back", "card", task.id)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def _button(text: str, action: str, task_id: int, agent: str = "") -> InlineKeyboardButton:
    data = TaskAction(action=action, id=task_id, agent=agent).pack()
    return InlineKeyboardButton(text=text, callback_data=data)


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


def _markup(markup: InlineKeyboardMarkup | None) -> object:
    return markup.model_dump(exclude_none=True) if markup is not None else None


def shows(message: Message, view: View, *, markup_only: bool = False) -> bool:
    """Whether `message` already looks like `view` (Telegram refuses an edit that changes
    nothing: 400 "message is not modified")."""
    same_markup = _markup(message.reply_markup) == _markup(view.markup)
    return same_markup and (markup_only or message.text == plain(view.text))


class _LastEdits:
    """What this process last made each recently edited message show. Two presses of one
    button at once both arrive with the message as it was; the second must not repeat the
    first's edit (Telegram refuses an edit that changes nothing). Bounded: the oldest go."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._views: OrderedDict[tuple[int, int], tuple[str, object]] = OrderedDict()

    def claim(self, key: tuple[int, int], shown: tuple[str, object]) -> bool:
        """True if the message is not known to show `shown` already; it is recorded as
        showing it (no await in between, so two presses cannot both claim one edit)."""
        if self._views.get(key) == shown:
            return False
        self._views[key] = shown
        self._views.move_to_end(key)
        while len(self._views) > self.size:
            self._views.popitem(last=False)
        return True

    def forget(self, key: tuple[int, int]) -> None:
        self._views.pop(key, None)


_last_edits = _LastEdits()


async def _edit(callback: CallbackQuery, view: View, *, markup_only: bool = False) -> None:
    """Make the message the button is on look like `view`, unless it already does. A failed
    edit (message deleted, too old) does not undo what was done, so it is only logged."""
    message = callback.message
    if not isinstance(message, Message) or shows(message, view, markup_only=markup_only):
        return
    key = (message.chat.id, message.message_id)
    if not _last_edits.claim(key, ("" if markup_only else view.text, _markup(view.markup))):
        return
    try:
        if markup_only:
            await message.edit_reply_markup(reply_markup=view.markup)
        else:
            await message.edit_text(view.text, reply_markup=view.markup)
    except TelegramBadRequest as err:
        _last_edits.forget(key)
        if "message is not modified" not in err.message:
            log.warning("could not edit message %d: %s", message.message_id, err.message)


async def _settle(
    callback: CallbackQuery, outcome: tasks.Outcome, done: str, view: View | None
) -> None:
    """After the change committed: show the task as it is now, tell the presser the outcome."""
    if view is not None:
        await _edit(callback, view)
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
    "accept": (tasks.DONE, "accepted", (tasks.IN_REVIEW,), "accepted: done"),
    "cancel": (tasks.CANCELLED, "from /task", None, "cancelled"),
    "unblock": (tasks.TODO, "unblocked", (tasks.BLOCKED,), "unblocked: back to todo"),
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


SENDBACK_PROMPT = "{who}: why send task #{id} back? Reply to this message with the reason."


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
    if task is None or task.status != tasks.IN_REVIEW:
        reason = (
            f"task #{task_id} is {task.status}, not in_review"
            if task is not None
            else f"there is no task #{task_id}"
        )
        await _settle(callback, tasks.Outcome(False, task, reason), "", view)
        return
    if isinstance(callback.message, Message):
        who = f'<a href="tg://user?id={person.telegram_id}">{esc(person.name)}</a>'
        sent = await callback.message.answer(
            SENDBACK_PROMPT.format(who=who, id=task_id),
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


async def send_back(db: Database, task_id: int, person: Person, reason: str) -> str:
    """Send a task in review back with the reason; the answer for the person."""
    async with db.claim() as session:
        outcome = await tasks.send_back(
            session, task_id, actor=person_actor(person), reason=reason
        )
    if not outcome.won or outcome.task is None:
        return esc(sentence(outcome.reason))
    return (
        f"Task #{task_id} sent back to {esc(outcome.task.assignee)} (in_progress); "
        "it is woken with your reason."
    )


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
    await _edit(callback, View("", _picker(task, org)), markup_only=True)
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
    await _edit(callback, await card(session, task, config, org))
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
    task = outcome.task
    await message.answer(
        f"Comment added to task #{task_id} ({task.status}, {esc(task.assignee)})."
    )


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
            session, task_id, tasks.CANCELLED, actor=person_actor(person), note=note
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
