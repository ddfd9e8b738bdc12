"""Tasks as people see them: a /tasks page, a /task card (text and buttons), the agent picker
of Reassign, and the callback data of their buttons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from pydantic import Field

from bot.config import Config
from bot.views.buttons import View
from bot.views.text import (
    TELEGRAM_LIMIT,
    clip,
    display_name,
    esc,
    mention,
    one_line,
    visible_len,
    when,
)
from storage.models import DbId, Task, TaskEvent
from storage.statuses import PRIORITIES, TaskStatus

PAGE_SIZE = 8
MAX_PAGE = 10**6
TITLE_LIMIT = 200
BODY_LIMIT = 1500
EVENTS_SHOWN = 10
CLOSED = (TaskStatus.DONE, TaskStatus.CANCELLED)

SENDBACK_PROMPT = "{who}: why send task #{id} back? Reply to this message with the reason."


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


def priority_name(priority: int) -> str:
    """The name of a stored priority: 0 -> "urgent"."""
    return next((k for k, v in PRIORITIES.items() if v == priority), str(priority))


def pages_of(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def listing(
    rows: Sequence[Task],
    total: int,
    page: int,
    scope: str,
    assignee: str | None,
    statuses: Sequence[str],
) -> View:
    """Page `page` (from 0) of a /tasks listing of `total` tasks; `scope` goes into the page
    buttons, `assignee` and `statuses` say what is listed."""
    pages = pages_of(total)
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


def event_line(event: TaskEvent, config: Config) -> str:
    at = when(event.created_at, config.tz, zone=False)
    change = ""
    if event.to_status:
        change = f" {event.from_status or ''}→{event.to_status}"
    body = f": {one_line(event.body, 80)}" if event.body else ""
    actor = clip(display_name(event.actor, config), 40)
    return esc(f"{at} {actor} {event.kind}{change}{body}")


def card(task: Task, events: Sequence[TaskEvent], config: Config, agents: Sequence[str]) -> View:
    """A /task card: its text (under Telegram's message limit, the oldest of `events` dropped
    first) and its buttons; `agents` are the fleet's agent ids (for Reassign)."""
    tz = config.tz
    head = [
        f"<b>Task #{task.id}</b> · {task.status}",
        f"<b>{esc(one_line(task.title, TITLE_LIMIT))}</b>",
        f"Assignee: {esc(task.assignee)} · priority {priority_name(task.priority)}"
        + (f" · retries {task.retries}/{task.max_retries}" if task.retries else ""),
        f"Created by {esc(clip(display_name(task.creator, config), 40))} "
        f"at {when(task.created_at, tz)}",
        f"Updated {when(task.updated_at, tz)}",
    ]
    if task.parent_id is not None:
        head.append(f"Parent: #{task.parent_id}")
    if task.status == TaskStatus.BLOCKED and task.blocked_reason:
        head.append(f"Blocked: {esc(clip(task.blocked_reason, 300))}")
    body = [f"\n{esc(clip(task.body.strip(), BODY_LIMIT))}"] if task.body.strip() else []
    history = [event_line(e, config) for e in events]
    while True:
        title = "<b>History</b>" + (" (latest)" if len(history) >= EVENTS_SHOWN else "")
        text = "\n".join([*head, *body, "", title, *history])
        if visible_len(text) <= TELEGRAM_LIMIT - 96 or not history:
            return View(text, card_buttons(task, agents))
        history = history[1:]


def card_buttons(task: Task, agents: Sequence[str]) -> InlineKeyboardMarkup | None:
    if task.status in CLOSED:
        return None
    row = [_button("Cancel", "cancel", task.id)]
    if task.status == TaskStatus.IN_REVIEW:
        row = [_button("Accept", "accept", task.id), _button("Send back", "sendback", task.id)]
        row.append(_button("Cancel", "cancel", task.id))
    if task.status == TaskStatus.BLOCKED:
        row.append(_button("Unblock", "unblock", task.id))
    if any(agent != task.assignee for agent in agents):
        row.append(_button("Reassign", "reassign", task.id))
    return InlineKeyboardMarkup(inline_keyboard=[row])


def picker(task: Task, agents: Sequence[str]) -> InlineKeyboardMarkup:
    """Reassign's keyboard: the other agents, three a row, and « Back to the card."""
    others = [_button(a, "to", task.id, a) for a in agents if a != task.assignee]
    rows = [others[i : i + 3] for i in range(0, len(others), 3)]
    rows.append([_button("« Back", "card", task.id)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def _button(text: str, action: str, task_id: int, agent: str = "") -> InlineKeyboardButton:
    data = TaskAction(action=action, id=task_id, agent=agent).pack()
    return InlineKeyboardButton(text=text, callback_data=data)


def sendback_prompt(telegram_id: int, name: str, task_id: int) -> str:
    """The prompt Send back posts: it mentions the presser, whose reply gives the reason."""
    return SENDBACK_PROMPT.format(who=mention(telegram_id, name), id=task_id)


def comment_added(task_id: int, status: str, assignee: str) -> str:
    """The answer to a comment on a task (/comment, or a reply to its card)."""
    return f"Comment added to task #{task_id} ({status}, {esc(assignee)})."
