"""/outbox and /resend: messages that have not gone out yet, and a way to retry failed ones."""

from __future__ import annotations

from aiogram.filters import CommandObject
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.args import id_argument, no_such
from bot.config import Config, Role
from bot.views import outbox as views
from handlers.registry import Routes, command
from storage import outbox

router = Routes(__name__)


@command(router, "outbox", Role.viewer)
async def show_outbox(message: Message, session: AsyncSession, config: Config) -> None:
    """Messages waiting or failed, with the last error"""
    rows = await outbox.unsent(session)
    if not rows:
        await message.answer("Outbox is empty: every message was delivered.")
        return
    await message.answer(views.unsent(rows, config.tz))


@command(router, "resend", Role.operator, usage="<outbox id>")
async def resend(message: Message, command: CommandObject, session: AsyncSession) -> None:
    """Retry a failed outbox message"""
    line = "Usage: /resend &lt;outbox id&gt; (see /outbox)"
    row_id = await id_argument(message, command.args or "", "outbox message", line)
    if row_id is None:
        return
    if await outbox.requeue(session, row_id):
        await message.answer(
            f"Outbox #{row_id} is queued again: the sender tries it within seconds; "
            "/outbox shows it until it is delivered."
        )
        return
    row = await outbox.get(session, row_id)
    if row is None:
        await message.answer(no_such("outbox message", row_id))
    else:
        await message.answer(f"Outbox #{row_id} is {row.status}; only failed messages are resent.")
