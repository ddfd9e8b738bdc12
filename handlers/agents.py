"""/agents, /agent, /pause, /resume, /wake and /stop (and the Stop button on a run's line in the
activity feed): the fleet's agents, read from the database.

Pause and resume go through `storage.agents`, wakes through `storage.runs`, each in
`Database.claim()` and answered after the commit (see handlers.tasks for why).
"""

from __future__ import annotations

import logging

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from agents.org import OrgChart
from bot.config import Config, Person, Role
from bot.views import agents as views
from bot.views.buttons import RunCb
from bot.views.text import clip, esc, split_html, when
from handlers.common import person_actor, unknown_agent, usage
from handlers.registry import Routes, command
from storage import agents as agent_state
from storage import runs, tasks
from storage.db import Database
from storage.models import Run, is_row_id
from storage.statuses import RunStatus
from storage.usage import spend_this_month

log = logging.getLogger(__name__)
router = Routes(__name__)

RUNS_SHOWN = 5


async def _agent_arg(
    message: Message, command: CommandObject, org: OrgChart, name: str, args: str
) -> tuple[str, str] | None:
    """(agent id, the rest of the arguments), or None after telling the person what is wrong."""
    line = usage(name, args)
    parts = (command.args or "").strip().split(maxsplit=1)
    if not parts:
        await message.answer(f"{line}\nAgents: {esc(clip(', '.join(org.ids), 1000))}.")
        return None
    agent_id = parts[0].lower()
    if agent_id not in org:
        await message.answer(unknown_agent(org, parts[0], line))
        return None
    return agent_id, parts[1].strip() if len(parts) > 1 else ""


@command(router, "agents", Role.viewer)
async def list_agents(
    message: Message, session: AsyncSession, config: Config, org: OrgChart
) -> None:
    """The agents: paused or active, running or last run, open tasks"""
    if not org.ids:
        await message.answer("No agents are configured ([[agents]] in the config).")
        return
    seen = await agent_state.overview(session, org.ids)
    lines = []
    for agent_id in org.ids:
        info = seen[agent_id]
        lines.append(
            views.agent_line(
                agent_id,
                org.get(agent_id),
                paused=info.paused,
                running=info.running,
                last=info.last,
                open_tasks=info.open_tasks,
                tz=config.tz,
            )
        )
    for part in split_html(views.listing(lines)):  # a large fleet does not fit in one message
        await message.answer(part)


@command(router, "agent", Role.viewer, usage="<id>")
async def show_agent(
    message: Message, command: CommandObject, session: AsyncSession, config: Config, org: OrgChart
) -> None:
    """One agent: status, current task, last runs, spend this month"""
    found = await _agent_arg(message, command, org, "agent", "<id>")
    if found is None:
        return
    agent_id = found[0]
    agent = org.get(agent_id)
    assert agent is not None
    state = await agent_state.state(session, agent_id)
    running = await runs.current(session, agent_id)
    queued = await runs.has_queued(session, agent_id)
    label, task = "Current task", None
    if running is not None and running.task_id is not None:
        task = await tasks.get(session, running.task_id)
    if task is None:
        label, task = "Next task", await tasks.next_for(session, agent_id, None)
    recent = await runs.recent(session, agent_id, RUNS_SHOWN)
    spent = await spend_this_month(session, agent_id)
    await message.answer(
        views.card(
            agent,
            state,
            running=running,
            queued=queued,
            task_label=label,
            task=task,
            recent=recent,
            spent=spent,
            config=config,
        )
    )


@command(router, "pause", Role.operator, usage="<agent> [reason]")
async def pause(
    message: Message,
    command: CommandObject,
    db: Database,
    person: Person,
    config: Config,
    org: OrgChart,
) -> None:
    """Pause an agent: its queued runs are skipped until /resume"""
    found = await _agent_arg(message, command, org, "pause", "<agent> [reason]")
    if found is None:
        return
    agent_id, reason = found
    async with db.claim() as session:
        change = await agent_state.pause(session, agent_id, by=person_actor(person), reason=reason)
    if change.won:
        await message.answer(
            f"Paused {esc(agent_id)}. Its queued runs are skipped until /resume {esc(agent_id)}"
            + ("; its run in flight is stopped." if change.stopped else ".")
        )
        return
    state = change.state
    by = views.paused_by(state, config)
    since = f" since {when(state.updated_at, config.tz)}" if state is not None else ""
    await message.answer(f"{esc(agent_id)} is already paused{by}{since}.")


@command(router, "resume", Role.operator, usage="<agent>")
async def resume(
    message: Message, command: CommandObject, db: Database, person: Person, org: OrgChart
) -> None:
    """Resume a paused agent"""
    found = await _agent_arg(message, command, org, "resume", "<agent>")
    if found is None:
        return
    agent_id = found[0]
    async with db.claim() as session:
        change = await agent_state.resume(session, agent_id, by=person_actor(person))
    if not change.won:
        await message.answer(f"{esc(agent_id)} is not paused.")
        return
    woken = (
        " It has work waiting and was woken."
        if change.woken
        else " Nothing is waiting: it runs at its next heartbeat or when it is given work."
    )
    await message.answer(f"Resumed {esc(agent_id)}.{woken}")


@command(router, "wake", Role.operator, usage="<agent>")
async def wake(message: Message, command: CommandObject, db: Database, org: OrgChart) -> None:
    """Queue a run of an agent now instead of at its next heartbeat"""
    found = await _agent_arg(message, command, org, "wake", "<agent>")
    if found is None:
        return
    agent_id = found[0]
    async with db.claim() as session:
        paused = await agent_state.is_paused(session, agent_id)
        queued = False if paused else await runs.wake(session, agent_id, "manual")
    if paused:
        await message.answer(
            f"{esc(agent_id)} is paused, so a run would be skipped; /resume {esc(agent_id)} first."
        )
    elif queued:
        await message.answer(f"{esc(agent_id)} will run now. {views.RUN_COST}")
    else:
        await message.answer(
            f"{esc(agent_id)} already had a run queued; this wake joins it, so it runs once, "
            f"now. {views.RUN_COST}"
        )


@command(router, "stop", Role.operator, usage="<agent>")
async def stop(
    message: Message, command: CommandObject, db: Database, person: Person, org: OrgChart
) -> None:
    """Stop an agent's run in flight now (no model or tool call after it)"""
    found = await _agent_arg(message, command, org, "stop", "<agent>")
    if found is None:
        return
    agent_id = found[0]
    async with db.claim() as session:
        stopped = await runs.request_stop(session, by=person_actor(person), agent_id=agent_id)
        running = None if stopped else await runs.current(session, agent_id)
    if stopped:
        await message.answer(f"Stopped run #{stopped[0].run_id} of {esc(agent_id)}.")
    elif running is not None:
        await message.answer(f"Run #{running.id} of {esc(agent_id)} is already being stopped.")
    else:
        await message.answer(f"{esc(agent_id)} has no run in flight.")


@router.callback_query(RunCb.filter(F.a == "stop"), flags={"role": Role.operator})
async def press_stop(
    callback: CallbackQuery, callback_data: RunCb, db: Database, person: Person
) -> None:
    """The Stop button on a run's line in the activity feed, for model and coding runs alike.
    A coding run's CLI running in this process is killed at once; a model run is asked to stop
    through its row (the process running it stops it before its next call)."""
    if not is_row_id(callback_data.id):
        await callback.answer("There is no such run.", show_alert=True)
        return
    # Imported here: agents.gateway still imports handlers (handlers.budget), so importing the
    # adapter while handlers/__init__ runs would be circular.
    from agents import process_adapter

    if process_adapter.stop(callback_data.id, by=person.name):
        log.info("coding run %d stopped by %s", callback_data.id, person.name)
        await callback.answer(f"Stopping run {callback_data.id}: its processes are killed.")
        return
    async with db.claim() as session:
        stopped = await runs.request_stop(
            session, by=person_actor(person), run_id=callback_data.id
        )
        run = None if stopped else await session.get(Run, callback_data.id)
    if stopped:
        await callback.answer(f"Stopped run #{callback_data.id} of {stopped[0].agent_id}.")
    elif run is None:
        await callback.answer("There is no such run.", show_alert=True)
    elif run.status == RunStatus.RUNNING:
        await callback.answer(f"Run #{run.id} is already being stopped.")
    else:
        await callback.answer(f"Run #{run.id} is not running: it is {run.status}.")


@router.callback_query(F.data.startswith("run:"))
async def stale_run_button(callback: CallbackQuery) -> None:
    """Run button data that does not parse: forged or from another version."""
    await callback.answer("This button is not valid; nothing was changed.", show_alert=True)
