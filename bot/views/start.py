"""/start, /help and /whoami as people read them."""

from __future__ import annotations

from collections.abc import Iterable

from bot.config import Feeds, Person, Role
from bot.views.text import esc


def hello(person: Person) -> str:
    return (
        f"Hello {esc(person.name)}. You are <b>{person.role}</b> of this fleet.\n"
        "/help lists the commands you can use."
    )


def help_text(role: Role, commands: Iterable[tuple[str, str, str]]) -> str:
    """/help: the commands of `role`, each (name, usage, help line)."""
    lines = [f"<b>Commands for {role}</b>"]
    for name, usage, line in commands:
        shown = f" {esc(usage)}" if usage else ""
        lines.append(f"/{name}{shown} — {esc(line)}")
    return "\n".join(lines)


def whoami(person: Person, user_id: int) -> str:
    return f"{esc(person.name)} · role <b>{person.role}</b> · Telegram id <code>{user_id}</code>"


def where(chat_id: int, topic: int | None, is_forum: bool, feeds: Feeds) -> list[str]:
    """The group's chat id and topic id, and the feeds configured there (or how to add one)."""
    lines = [f"This chat: id <code>{chat_id}</code>"]
    if topic is not None:
        lines.append(f"This topic: id <code>{topic}</code>")
    elif is_forum:
        lines.append("General topic (it has no id; send /whoami in a topic to see that one's)")
    here = [
        name + (f" (topic {feed.topic})" if feed.topic else "")
        for name, feed in feeds.items()
        if feed.chat_id == chat_id
    ]
    if here:
        lines.append(f"Feeds here: {esc(', '.join(here))}")
    else:
        at = f"chat_id = {chat_id}" + (f", topic = {topic}" if topic is not None else "")
        lines.append(
            "No feed is here yet. To add one, under [feeds] in the config: "
            f"<code>alerts = {{ {at} }}</code>"
        )
    return lines
