"""/web: a one-time sign-in link to Mission Control, the read-only web page."""

from __future__ import annotations

from aiogram.types import LinkPreviewOptions, Message

from bot.config import Config, Person, Role
from bot.views.text import esc
from bot.web.auth import LINK, LINK_SECONDS
from bot.web.sessions import signer_for
from handlers.registry import Routes, command
from storage.db import Database

router = Routes(__name__)


@command(router, "web", Role.viewer)
async def web_link(message: Message, person: Person, config: Config, db: Database) -> None:
    """A sign-in link to the fleet's web page (valid 5 minutes, works once)"""
    if not config.web.listen:
        await message.answer(
            'The web page is off: set [web] listen = "127.0.0.1:8088" in the config and '
            "restart the fleet."
        )
        return
    if message.chat.type != "private":
        # Anyone in the group could open it and be signed in as this person.
        await message.answer("Send /web to me in a private chat: a sign-in link is yours alone.")
        return
    signer = await signer_for(config, db)
    token = signer.issue(LINK, person.telegram_id, LINK_SECONDS)
    url = f"{config.web.base_url()}/signin?t={token}"
    await message.answer(
        f'<a href="{esc(url)}">Open Mission Control</a> as {esc(person.name)} — this link works '
        f"once, for {LINK_SECONDS // 60} minutes.\n{esc(url)}",
        link_preview_options=LinkPreviewOptions(is_disabled=True),
    )
