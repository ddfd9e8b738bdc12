"""/start, /help and /whoami."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import Message

from bot.config import Person, Role
from bot.text import esc
from handlers.registry import command, commands_for

router = Router(name=__name__)


@command(router, "start", Role.viewer)
async def start(message: Message, person: Person) -> None:
    """Say hello and show what you can do"""
    await message.answer(
        f"Hello {esc(person.name)}. You are <b>{person.role}</b> of this fleet.\n"
        "/help lists the commands you can use."
    )


@command(router, "help", Role.viewer)
async def help_(message: Message, person: Person, routers: list[Router]) -> None:
    """List the commands you can use"""
    lines = [f"<b>Commands for {person.role}</b>"]
    for spec in commands_for(routers, person.role):
        usage = f" {esc(spec.usage)}" if spec.usage else ""
        lines.append(f"/{spec.name}{usage} — {esc(spec.help)}")
    await message.answer("\n".join(lines))


@command(router, "whoami", Role.viewer)
async def whoami(message: Message, person: Person) -> None:
    """Show who the bot thinks you are"""
    user_id = message.from_user.id if message.from_user else person.telegram_id
    await message.answer(
        f"{esc(person.name)} · role <b>{person.role}</b> · Telegram id <code>{user_id}</code>"
    )
