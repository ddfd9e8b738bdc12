"""Publications in Telegram: /published lists what agents published, with where it went."""

from __future__ import annotations

from aiogram.filters import CommandObject
from aiogram.types import Message

from bot.config import Config, Role
from bot.views import publish as views
from bot.views.text import esc
from handlers.registry import Routes, command
from storage import publications
from storage.db import Database

router = Routes(__name__)


@command(router, "published", Role.viewer, usage="[target]")
async def show_published(
    message: Message,
    command: CommandObject,
    db: Database,
    config: Config,
) -> None:
    """Publications (of one target): status, where they went, why not"""
    target = (command.args or "").strip() or None
    known = [t.id for t in config.publish_targets]
    if target is not None and target not in known:
        listed = ", ".join(known) or "none configured"
        await message.answer(f"There is no publish target {esc(target[:40])}. Known: {listed}.")
        return
    async with db.session() as session:
        found = await publications.recent(session, target)
    if not found:
        await message.answer("No publications" + (f" to {esc(target)}." if target else "."))
        return
    await message.answer(views.published(found, target, config))
