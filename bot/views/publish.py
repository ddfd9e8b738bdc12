"""Publications as people see them: /published."""

from __future__ import annotations

from collections.abc import Sequence

from bot.config import Config
from bot.views.text import esc, one_line, when
from storage.models import Publication
from storage.statuses import PublicationStatus

MARKS: dict[str, str] = {
    PublicationStatus.PUBLISHED: "✅",
    PublicationStatus.UNVERIFIED: "⚠️",
    PublicationStatus.UNKNOWN: "❓",
    PublicationStatus.FAILED: "❌",
    PublicationStatus.REFUSED: "🚫",
    PublicationStatus.REJECTED: "✖️",
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


def published(found: Sequence[Publication], target: str | None, config: Config) -> str:
    """/published: the publications (of one target), newest first."""
    lines = [f"<b>Publications</b>{' to ' + esc(target) if target else ''} (newest first)"]
    for p in found:
        mark = MARKS.get(p.status, "🟡")
        at = when(p.published_at or p.created_at, config.tz)
        tail = where(p)
        lines.append(
            f"{mark} #{p.id} {esc(p.target)} · {esc(p.status)} · {esc(p.agent_id)} · {at}"
            + (f" · {tail}" if tail else "")
        )
    return "\n".join(lines)
