"""What several handlers share: usage lines, the answer to an unknown agent, storage reasons
as sentences, the actor a person acts as, and the task changes that more than one feature
makes (a task from text, sending a task back).

Handlers import these from here, never from another feature's handler module, so a feature
module is only ever imported by the router assembly (handlers/__init__.py).
"""

from __future__ import annotations

from agents.org import OrgChart
from bot.config import Person, Role
from bot.views.text import clip, esc
from storage import tasks
from storage.db import Database

OPERATOR = {"role": Role.operator}
TITLE_LIMIT = 200


def usage(name: str, args: str) -> str:
    return f"Usage: /{name} {esc(args)}"


def unknown_agent(org: OrgChart, name: str, usage_line: str) -> str:
    close = org.closest(name)
    hint = (
        f" Did you mean: {esc(', '.join(close))}?"
        if close
        else f" The agents are: {esc(clip(', '.join(org.ids), 1000))}."
    )
    return f'Unknown agent "{esc(clip(name, 40))}".{hint}\n{usage_line}'


def sentence(reason: str) -> str:
    """A storage reason ("task #3 is done; ...") as a sentence for a person."""
    text = reason[:1].upper() + reason[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def person_actor(person: Person) -> str:
    return f"person:{person.telegram_id}"


def split_title(text: str) -> tuple[str, str]:
    """Title = the first line (at most 200 characters), body = the rest. A longer first line
    is cut in the title and kept whole in the body, so nothing the person wrote is lost."""
    first, _, rest = text.strip().partition("\n")
    first = first.strip()
    if len(first) <= TITLE_LIMIT:
        return first, rest.strip()
    return first[: TITLE_LIMIT - 1] + "…", text.strip()


async def send_back(db: Database, task_id: int, person: Person, reason: str) -> str:
    """Send a task in review back with the reason; the answer for the person (/sendback, and
    a reply to the Send back prompt)."""
    async with db.claim() as session:
        outcome = await tasks.send_back(
            session, task_id, actor=person_actor(person), reason=reason
        )
    if not outcome.won or outcome.task is None:
        return esc(sentence(outcome.reason))
    return (
        f"Task #{task_id} sent back to {esc(outcome.task.assignee)} (in_progress); "
        "it is woken with your reason."
    )
