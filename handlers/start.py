"""/start, /help and /whoami."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import Message

from bot.config import Config, Person, Role
from bot.views import start as views
from handlers.registry import Routes, command, commands_for

router = Routes(__name__)


@command(router, "start", Role.viewer)
async def start(message: Message, person: Person) -> None:
    """Say hello and show what you can do"""
    await message.answer(views.hello(person))


@command(router, "help", Role.viewer)
async def help_(message: Message, person: Person, routers: list[Router]) -> None:
    """List the commands you can use"""
    specs = commands_for(routers, person.role)
    await message.answer(views.help_text(person.role, ((s.name, s.usage, s.help) for s in specs)))


@command(router, "whoami", Role.viewer)
async def whoami(message: Message, person: Person, config: Config) -> None:
    """Show who you are to the bot; in a group, also its chat id and topic id"""
    user_id = message.from_user.id if message.from_user else person.telegram_id
    lines = [views.whoami(person, user_id)]
    if message.chat.type != "private":
        chat = message.chat
        topic = message.message_thread_id if message.is_topic_message else None
        lines += views.where(chat.id, topic, bool(chat.is_forum), config.feeds)
    await message.answer("\n".join(lines))
