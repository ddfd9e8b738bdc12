"""/start, /help and /whoami."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import Message

from bot.config import Config, Person, Role
from bot.views.text import esc
from handlers.registry import Routes, command, commands_for

router = Routes(__name__)


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
async def whoami(message: Message, person: Person, config: Config) -> None:
    """Show who you are to the bot; in a group, also its chat id and topic id"""
    user_id = message.from_user.id if message.from_user else person.telegram_id
    lines = [
        f"{esc(person.name)} · role <b>{person.role}</b> · Telegram id <code>{user_id}</code>"
    ]
    if message.chat.type != "private":
        lines += _where(message, config)
    await message.answer("\n".join(lines))


def _where(message: Message, config: Config) -> list[str]:
    """The group's chat id and topic id, and the feeds configured there (or how to add one)."""
    chat = message.chat
    topic = message.message_thread_id if message.is_topic_message else None
    lines = [f"This chat: id <code>{chat.id}</code>"]
    if topic is not None:
        lines.append(f"This topic: id <code>{topic}</code>")
    elif chat.is_forum:
        lines.append("General topic (it has no id; send /whoami in a topic to see that one's)")
    feeds = [
        name + (f" (topic {feed.topic})" if feed.topic else "")
        for name, feed in config.feeds.items()
        if feed.chat_id == chat.id
    ]
    if feeds:
        lines.append(f"Feeds here: {esc(', '.join(feeds))}")
    else:
        where = f"chat_id = {chat.id}" + (f", topic = {topic}" if topic is not None else "")
        lines.append(
            "No feed is here yet. To add one, under [feeds] in the config: "
            f"<code>alerts = {{ {where} }}</code>"
        )
    return lines
