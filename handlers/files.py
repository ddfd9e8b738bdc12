"""A task's artifacts in Telegram: /files <task> lists them, a button sends one as a document.

The file sent is the one on disk now, found through its writer's roots (a symlink planted since
cannot lead elsewhere); Telegram bots send at most 50 MB, a larger file is refused with its size.
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import F
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import CommandObject
from aiogram.types import (
    CallbackQuery,
    FSInputFile,
    Message,
)

from agents.files import Confinement, FileRefused, sha256_of
from bot.args import id_argument, no_such
from bot.config import Config, Role
from bot.views import files as views
from bot.views.files import FileCb
from bot.views.text import clip
from handlers.common import usage
from handlers.registry import Routes, command
from storage import artifacts, tasks
from storage.db import Database

log = logging.getLogger(__name__)
router = Routes(__name__)

VIEWER = {"role": Role.viewer}
MAX_SEND = 50 * 1024 * 1024  # what the Bot API lets a bot upload


@command(router, "files", Role.viewer, usage="<task>")
async def list_files(message: Message, command: CommandObject, db: Database) -> None:
    """The files a task's agents wrote, with buttons to get them"""
    task_id = await id_argument(message, command.args or "", "task", usage("files", "<task>"))
    if task_id is None:
        return
    async with db.session() as session:
        task = await tasks.get(session, task_id)
        found = await artifacts.for_task(session, task_id) if task is not None else []
    if task is None:
        await message.answer(no_such("task", task_id))
        return
    if not found:
        await message.answer(f"Task #{task_id} has no files yet.")
        return
    text, keyboard = views.listing(task_id, found)
    await message.answer(text, reply_markup=keyboard)


@router.callback_query(FileCb.filter(), flags=VIEWER)
async def press_send(
    callback: CallbackQuery, callback_data: FileCb, db: Database, config: Config
) -> None:
    async with db.session() as session:
        artifact = await artifacts.get(session, callback_data.id)
    if artifact is None:
        await callback.answer("There is no such file record.", show_alert=True)
        return
    name = views.name_of(artifact)
    agent = next((a for a in config.agents if a.id == artifact.agent_id), None)
    if agent is None:
        await callback.answer(f"{name}: its agent is no longer in the config.", show_alert=True)
        return
    try:
        target = Confinement(config, agent).resolve(name)
        size = target.path.stat().st_size if target.path.is_file() else None
    except (FileRefused, OSError) as err:
        await callback.answer(clip(f"{name} cannot be sent: {err}", 200), show_alert=True)
        return
    if size is None:
        await callback.answer(f"{name} does not exist any more.", show_alert=True)
        return
    if size > MAX_SEND:
        await callback.answer(
            f"{name} is {views.size_text(size)}; Telegram bots send at most 50 MB.",
            show_alert=True,
        )
        return
    # Up to 50 MB hashed: off the event loop.
    changed = await asyncio.to_thread(sha256_of, target.path) != artifact.sha256
    message = callback.message
    if not isinstance(message, Message):
        await callback.answer("The message is too old; use /files again.", show_alert=True)
        return
    try:
        await message.answer_document(
            FSInputFile(target.path, filename=target.path.name),
            caption=views.caption(artifact, size, changed),
        )
    except TelegramAPIError as err:
        log.warning("sending %s failed: %s", name, err)
        await callback.answer(
            clip(f"Telegram refused {name}: {err.message}", 200), show_alert=True
        )
        return
    await callback.answer()


@router.callback_query(F.data.startswith("fl:"))
async def forged_file_button(callback: CallbackQuery) -> None:
    await callback.answer("This button is not valid; nothing was changed.", show_alert=True)
