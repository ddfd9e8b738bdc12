"""The outbox as people see it: /outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo

from bot.views.text import esc, when, zone_note
from storage.models import Outbox


def unsent(rows: Sequence[Outbox], tz: tzinfo) -> str:
    """/outbox: the messages waiting or failed, oldest first, with their last error."""
    lines = [f"<b>Outbox</b> (oldest first) · {zone_note(tz)}"]
    for row in rows:
        where = row.feed or str(row.chat_id)
        preview = esc(row.text[:60].replace("\n", " "))
        error = f" — {esc(row.last_error[:120])}" if row.last_error else ""
        status = row.status
        if row.in_flight_at is not None:
            status += f" (sending since {when(row.in_flight_at, tz, zone=False)})"
        lines.append(
            f"#{row.id} {status} → {esc(where)}, {row.attempts} attempt(s), "
            f"queued {when(row.created_at, tz, zone=False)}: {preview}{error}"
        )
    return "\n".join(lines)
