"""Publications in Telegram: /published lists what agents published, with where it went."""

from __future__ import annotations

from aiogram.filters import CommandObject
from aiogram.types import Message

from bot.config import Config, Role
from bot.views.text import esc, one_line
from handlers.approvals import settings
from handlers.registry import Routes, command
from storage import approvals, publications
from storage.db import Database
from storage.models import Publication

router = Routes(__name__)

MARKS = {
    publications.PUBLISHED: "✅",
    publications.UNVERIFIED: "⚠️",
    publications.UNKNOWN: "❓",
    publications.FAILED: "❌",
    publications.REFUSED: "🚫",
    publications.REJECTED: "✖️",
}


def where(publication: Publication) -> str:
    """A link or message id for a publication that went out, else its reason."""
    if publication.message_id is not None and publication.chat_id is not None:
        chat = str(publication.chat_id).removeprefix("-100")
        link = f"https://t.me/c/{chat}/{publication.message_id}"
        return f'<a href="{esc(link)}">message {publication.message_id}</a>'
    if publication.location:
        return esc(publication.location)
    return esc(one_line(publication.reason, 100)) if publication.reason else ""


@command(router, "published", Role.viewer, usage="[target]")
async def show_published(
    message: Message, command: CommandObject, db: Database, config: Config
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
    s = settings(config)
    lines = [f"<b>Publications</b>{' to ' + esc(target) if target else ''} (newest first)"]
    for p in found:
        mark = MARKS.get(p.status, "🟡")
        at = approvals.moment(p.published_at or p.created_at, s)
        tail = where(p)
        lines.append(
            f"{mark} #{p.id} {esc(p.target)} · {esc(p.status)} · {esc(p.agent_id)} · {at}"
            + (f" · {tail}" if tail else "")
        )
    await message.answer("\n".join(lines))
