"""/incidents, /ack, /resolve, /silence and the buttons on alerts (Ack, Resolve, Silence).

A button acts on every incident its alert announced (one alert may list a burst). Each press
is re-checked against the database: a stale or repeated press changes nothing and says so.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.args import DurationError, id_argument, no_such, parse_duration_arg
from bot.config import Config, Person, Role
from bot.views.incidents import IncidentCb, alert_buttons
from bot.views.text import clip, display_name, esc, when, zone_note
from handlers.common import person_actor, usage
from handlers.registry import Routes, command
from integrations import alertmanager
from storage import incidents, outbox
from storage import web as web_store
from storage.db import Database
from storage.models import Incident, utcnow
from storage.statuses import IncidentStatus

log = logging.getLogger(__name__)
router = Routes(__name__)

OPERATOR = {"role": Role.operator}
SILENCE_MAX = timedelta(days=30)
SILENCES = {"s1h": timedelta(hours=1), "s4h": timedelta(hours=4)}


def _markup(rows: list[list[outbox.Button]]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton.model_validate(b) for b in row] for row in rows]
    )


def _line(incident: Incident, config: Config) -> str:
    state = incident.status
    if incident.status == IncidentStatus.SILENCED and incident.silenced_until is not None:
        state = f"silenced until {when(incident.silenced_until, config.tz, zone=False)}"
    requested = f", {incident.requested_severity} requested" if incident.requested_severity else ""
    return (
        f"#{incident.id} {incident.severity} {esc(clip(incident.title, 80))} "
        f"({esc(state)}{requested}, since {esc(when(incident.opened_at, config.tz, zone=False))})"
    )


@command(router, "incidents", Role.viewer)
async def list_incidents(message: Message, db: Database, config: Config) -> None:
    """Open, acknowledged and silenced incidents"""
    async with db.session() as session:
        found = await incidents.listing(session)
        total = await incidents.count_live(session)
    if not found:
        await message.answer("No open incidents.")
        return
    more = f"\n… and {total - len(found)} more" if total > len(found) else ""
    title = f"<b>Incidents</b> · {zone_note(config.tz)}\n"
    await message.answer(title + "\n".join(_line(i, config) for i in found) + more)


@command(router, "ack", Role.operator, usage="<incident id>")
async def ack(message: Message, command: CommandObject, db: Database, person: Person) -> None:
    """Acknowledge an incident (its reminders stop)"""
    line = usage("ack", "<incident id>")
    incident_id = await id_argument(message, command.args or "", "incident", line)
    if incident_id is None:
        return
    async with db.claim() as session:
        won = await incidents.acknowledge(session, incident_id, actor=person_actor(person))
        incident = await incidents.get(session, incident_id)
    await message.answer(_outcome(incident_id, incident, won, "acknowledged"))


@command(router, "resolve", Role.operator, usage="<incident id>")
async def resolve(message: Message, command: CommandObject, db: Database, person: Person) -> None:
    """Resolve an incident"""
    line = usage("resolve", "<incident id>")
    incident_id = await id_argument(message, command.args or "", "incident", line)
    if incident_id is None:
        return
    async with db.claim() as session:
        won = await incidents.resolve_id(
            session, incident_id, actor=person_actor(person), by=person.name
        )
        incident = await incidents.get(session, incident_id)
    await message.answer(_outcome(incident_id, incident, won, "resolved"))


def _outcome(incident_id: int, incident: Incident | None, won: bool, done: str) -> str:
    if incident is None:
        return no_such("incident", incident_id)
    if won:
        return f"Incident #{incident.id} {done}."
    return f"Incident #{incident.id} is {incident.status}; nothing changed."


@command(router, "silence", Role.operator, usage="<check|fingerprint> <duration>")
async def silence(
    message: Message, command: CommandObject, db: Database, person: Person, config: Config
) -> None:
    """Silence a check or fingerprint for a while, e.g. /silence site 2h"""
    line = usage("silence", "<check|fingerprint> <duration>")
    parts = (command.args or "").split(maxsplit=1)
    if len(parts) != 2 or len(parts[0]) > 128:
        await message.answer(line)
        return
    try:
        length = parse_duration_arg(parts[1], SILENCE_MAX)
    except DurationError as err:
        await message.answer(f"{err}\n{line}")
        return
    until = utcnow() + length
    async with db.claim() as session:
        found = await incidents.silence(session, parts[0], until, actor=person_actor(person))
    await message.answer(
        f"Silenced {esc(parts[0])} until {esc(when(until, config.tz))}"
        + (f" ({len(found)} open incident(s))." if found else " (no open incident matches yet).")
    )


@router.callback_query(
    IncidentCb.filter(F.action.in_({"ack", "resolve", "s1h", "s4h"})), flags=OPERATOR
)
async def press(
    callback: CallbackQuery,
    callback_data: IncidentCb,
    db: Database,
    person: Person,
    config: Config,
) -> None:
    actor = person_actor(person)
    async with db.claim() as session:
        group = await incidents.in_alert(session, callback_data.id)
        changed = 0
        for incident in group:
            if callback_data.action == "ack":
                changed += await incidents.acknowledge(session, incident.id, actor=actor)
            elif callback_data.action == "resolve":
                changed += await incidents.resolve_id(
                    session, incident.id, actor=actor, by=person.name
                )
            elif incident.status in incidents.LIVE:
                until = utcnow() + SILENCES[callback_data.action]
                changed += len(
                    await incidents.silence(session, incident.fingerprint, until, actor=actor)
                )
        states = [await incidents.get(session, i.id) for i in group]
    if not group:
        await callback.answer(no_such("incident", callback_data.id), show_alert=True)
        return
    summary = ", ".join(f"#{i.id} {i.status}" for i in states if i is not None)
    if not changed:
        await callback.answer(clip(f"Nothing changed: {summary}", 200), show_alert=True)
        return
    await callback.answer(clip(summary, 200))
    if callback_data.action in SILENCES:
        # After the answer: Alertmanager may take seconds, the press is answered at once.
        made = await _silence_at_sources(db, config, group, SILENCES[callback_data.action], person)
        if made:
            summary += f" (silenced in Alertmanager too: {', '.join(made)})"
    buttons = alert_buttons(callback_data.id, [i.status for i in states if i is not None])
    await _show(callback, f"{display_name(actor, config)}: {summary}", buttons)


async def _silence_at_sources(
    db: Database, config: Config, group: list[Incident], length: timedelta, person: Person
) -> list[str]:
    """For incidents that came from an Alertmanager source with `url`, a silence there too
    (matchers from the alert's labels, the person's name as creator). Returns the silence ids
    made; a failure is logged, and the silence here stands all the same."""
    made: list[str] = []
    sources = {s.id: s for s in config.web.sources if s.kind == "alertmanager" and s.url}
    for incident in group:
        async with db.session() as session:
            alert = await web_store.alert_of(session, incident.id)
        if alert is None or alert.source not in sources:
            continue
        now = utcnow()
        try:
            silence_id = await alertmanager.create_silence(
                sources[alert.source].url,
                alert.labels,
                starts=now,
                ends=now + length,
                created_by=person.name,
                comment=f"Silenced from fleetbridge incident #{incident.id}",
            )
        except alertmanager.AlertmanagerError as err:
            log.warning("incident #%d: no silence in Alertmanager: %s", incident.id, err)
            continue
        async with db.session() as session:
            await web_store.set_silence(session, incident.id, silence_id)
        log.info("incident #%d: Alertmanager silence %s", incident.id, silence_id)
        made.append(silence_id)
    return made


STATE_MARK = "\n\n☑️ "  # starts the line that says who last changed the alert's incidents


async def _show(callback: CallbackQuery, line: str, buttons: list[list[outbox.Button]]) -> None:
    """Edit the alert to its current state: the latest change replaces an earlier one, and
    only the buttons that still apply stay."""
    message = callback.message
    if not isinstance(message, Message) or message.text is None:
        return
    body = message.html_text.split(STATE_MARK, 1)[0]
    try:
        await message.edit_text(
            f"{body}{STATE_MARK}{esc(clip(line, 500))}", reply_markup=_markup(buttons)
        )
    except TelegramBadRequest as err:
        if "message is not modified" not in err.message:
            log.warning("could not edit alert %d: %s", message.message_id, err.message)
