"""A task's files as people see them: /files with a Send button per artifact."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.views.text import clip, esc
from storage.models import Artifact, DbId

BUTTONS_SHOWN = 40


class FileCb(CallbackData, prefix="fl"):
    """The Send button of one artifact."""

    id: DbId


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def name_of(artifact: Artifact) -> str:
    """The name an agent's file tools know the file by: "<root>:<path>"."""
    return f"{artifact.root}:{artifact.path}"


def listing(task_id: int, found: Sequence[Artifact]) -> tuple[str, InlineKeyboardMarkup]:
    """/files <task>: one line and one Send button per file (the first 40 buttons)."""
    lines = [f"<b>Files of task #{task_id}</b>"]
    rows: list[list[InlineKeyboardButton]] = []
    for artifact in found:
        name = name_of(artifact)
        kind = " (command output)" if artifact.kind == "command" else ""
        lines.append(
            f"#{artifact.id} {esc(name)}{kind} · {size_text(artifact.bytes)} · by "
            f"{esc(artifact.agent_id)}"
        )
        rows.append(
            [
                InlineKeyboardButton(
                    text=clip(f"📄 {name}", 60), callback_data=FileCb(id=artifact.id).pack()
                )
            ]
        )
    return "\n".join(lines), InlineKeyboardMarkup(inline_keyboard=rows[:BUTTONS_SHOWN])


def caption(artifact: Artifact, size: int, changed: bool) -> str:
    """The sent document's caption."""
    note = " (changed since it was written)" if changed else ""
    return clip(f"{name_of(artifact)}, {size_text(size)}, by {artifact.agent_id}{note}", 1000)
