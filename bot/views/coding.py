"""Coding agents as people see them: a coding run's line in the activity feed (with the Stop
button of every run, `bot.views.buttons.stop_button`), /queue with its buttons, and the alert
of a nightly queue that took no task."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.config import AgentConfig, Config
from bot.views.tasks import priority_name
from bot.views.text import clip, esc
from storage.models import Task

SHOWN = 15  # tasks listed (and given buttons) in /queue


class QueueCb(CallbackData, prefix="cq"):
    """A queue button: a = "u" (move up) or "o" (out of the queue)."""

    a: str
    agent: str
    task: int


def queue_view(
    agent_id: str, found: Sequence[Task], config: Config, *, buttons: bool
) -> tuple[str, InlineKeyboardMarkup | None]:
    """/queue <agent>: the todo tasks in the order the nightly queue takes them; with
    `buttons`, ⬆ (move up) and ✖ (take out) for each task shown."""
    agent = next((a for a in config.agents if a.id == agent_id), None)
    when = agent.queue.cron if agent is not None and agent.queue is not None else None
    head = f"<b>Queue of {esc(agent_id)}</b>" + (
        f" (runs at <code>{esc(when)}</code>, {agent.queue.max_tasks} a night)"
        if when and agent is not None and agent.queue is not None
        else " (no nightly queue configured: todo tasks start when assigned)"
    )
    if not found:
        return f"{head}\nNo todo tasks.", None
    lines = [head]
    lines += [
        f"{n}. #{t.id} {esc(clip(t.title, 80))} · {priority_name(t.priority)}"
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


def running_line(agent: AgentConfig, run_id: int, task: Task, branch: str) -> str:
    """The activity feed's line for a coding run in progress (it carries the Stop button)."""
    clis = ", ".join(c.id for c in agent.clis)
    return (
        f"▶️ <b>{esc(agent.id)}</b> is coding task #{task.id} {esc(task.title[:80])} on "
        f"<code>{esc(branch)}</code> ({esc(clis)}; run {run_id})"
    )


# A coding run's outcome -> its mark; anything else is ❌.
MARKS = {"succeeded": "✅", "cancelled": "⏹", "deferred": "⏸"}


def ran_line(agent_id: str, run_id: int, task: Task, status: str) -> str:
    """The running line once the run ended: its outcome (and no Stop button any more)."""
    mark = MARKS.get(status, "❌")
    return f"{mark} <b>{esc(agent_id)}</b> coded task #{task.id} (run {run_id}): {esc(status)}"


def queue_skipped(agent_id: str, why: str) -> str:
    """The alert of a nightly queue that took no task (paused, budget spent)."""
    return f"🌙 The nightly queue of <b>{esc(agent_id)}</b> took no task: {esc(why)}."
