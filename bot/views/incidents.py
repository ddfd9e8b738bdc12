"""Incidents as people see them: the buttons on an alert (Ack, Resolve, Silence) and their
callback data, and the notices that reply to an alert (resolved, still open, now P1) or page
everyone for a P0."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from aiogram.filters.callback_data import CallbackData

from bot.views.text import esc
from storage.models import DbId, Incident
from storage.statuses import IncidentStatus

Button = dict[str, str]  # storage.outbox.Button: {"text": ..., "callback_data": ...}


class IncidentCb(CallbackData, prefix="inc"):
    """A button on an alert: `action` (ack, resolve, s1h, s4h) on the alert of incident `id`."""

    action: str
    id: DbId


def alert_buttons(
    incident_id: int, statuses: Collection[str] = (IncidentStatus.OPEN,)
) -> list[list[Button]]:
    """The buttons of the alert of `incident_id` while the incidents it lists are in `statuses`:
    Ack while one is open, Silence while one is open or acknowledged, Resolve while one is not
    resolved. An alert shows only what still applies; once all are resolved, no buttons."""

    def button(text: str, action: str) -> Button:
        return {"text": text, "callback_data": IncidentCb(action=action, id=incident_id).pack()}

    live = set(statuses) - {IncidentStatus.RESOLVED}
    first = [button("Ack", "ack")] if IncidentStatus.OPEN in live else []
    first += [button("Resolve", "resolve")] if live else []
    loud = live & {IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED}
    second = [button("Silence 1h", "s1h"), button("Silence 4h", "s4h")] if loud else []
    return [row for row in (first, second) if row]


def who(actor: str) -> str:
    """ "agent:hub" -> "hub", "check:site" -> "check site", "person:1001" stays."""
    kind, _, rest = actor.partition(":")
    if kind == "agent":
        return rest
    if kind == "check":
        return f"check {rest}"
    return actor


def resolved(incident: Incident, by: str) -> str:
    """The reply to an announced incident's alert once it is resolved (`by`: who, as read)."""
    return f"✅ Resolved: #{incident.id} {esc(incident.title)} ({esc(by)})"


def reminder(incident: Incident) -> str:
    """The reply to the alert of an unacknowledged P1/P0 incident, every repeat_interval."""
    return (
        f"⏰ Still open and not acknowledged: #{incident.id} {incident.severity} "
        f"{esc(incident.title)}"
    )


def now_p1(incident: Incident, actor: str) -> str:
    """The reply to the alert of an incident the hub confirmed as P1."""
    return f"🟠 #{incident.id} {esc(incident.title)} is now P1 (confirmed by {esc(who(actor))})"


def p0_page(
    incident: Incident, confirmed_by: str, approved_by: str, people: Sequence[tuple[int, str]]
) -> str:
    """The P0 page: to the alerts feed, and to each of `people` (telegram id, name), every
    one of them mentioned."""
    mentions = ", ".join(f'<a href="tg://user?id={pid}">{esc(name)}</a>' for pid, name in people)
    return (
        f"🔴 <b>P0</b> #{incident.id} {esc(incident.title)}\n"
        f"Confirmed by {esc(who(confirmed_by))}, approved by {esc(who(approved_by))}."
        + (f"\n{mentions}" if mentions else "")
    )
