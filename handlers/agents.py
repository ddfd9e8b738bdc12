"""/agents, /agent, /pause, /resume, /wake and /stop (and the Stop button on a run's line in the
activity feed): the fleet's agents, read from the database.

Pause and resume go through `storage.agents`, wakes through `storage.runs`, each in
`Database.claim()` and answered after the commit (see handlers.tasks for why).
"""

from __future__ import annotations

from datetime import tzinfo
from decimal import Decimal

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from agents.org import OrgChart
from bot.config import Config, Person, Role
from bot.views.buttons import RunCb
from bot.views.text import clip, esc, one_line, split_html, usd, when
from handlers.registry import Routes, command
from handlers.tasks import actor_name, person_actor, unknown_agent, usage
from storage import agents as agent_state
from storage import runs, tasks
from storage.db import Database
from storage.models import Run
from storage.usage import spend_this_month

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


def _run_time(run: Run, tz: tzinfo) -> str:
    return when(run.finished_at or run.started_at or run.queued_at, tz)


@command(router, "agents", Role.viewer)
async def list_agents(
    message: Message, session: AsyncSession, config: Config, org: OrgChart
) -> None:
    """The agents: paused or active, running or last run, open tasks"""
    if not org.ids:
        await message.answer("No agents are configured ([[agents]] in the config).")
        return
    seen = await agent_state.overview(session, org.ids)
    lines = ["<b>Agents</b>"]
    for agent_id in org.ids:
        agent = org.get(agent_id)
        info = seen[agent_id]
        title = f" ({esc(clip(agent.title, 60))})" if agent and agent.title else ""
        parts = [f"<b>{esc(agent_id)}</b>{title}", "⏸ paused" if info.paused else "active"]
        if info.running is not None:
            parts.append(
                f"running since {when(info.running.started_at, config.tz)} "
                f"({esc(info.running.trigger)})"
            )
        elif info.last is not None:
            parts.append(f"last run {info.last.status} {_run_time(info.last, config.tz)}")
        else:
            parts.append("no runs yet")
        parts.append(f"{info.open_tasks} open task{'' if info.open_tasks == 1 else 's'}")
        lines.append(" · ".join(parts))
    lines.append("/agent &lt;id&gt; shows one agent.")
    for part in split_html("\n".join(lines)):  # a large fleet does not fit in one message
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
    tz = config.tz
    state = await agent_state.state(session, agent_id)
    title = f" — {esc(clip(agent.title, 80))}" if agent.title else ""
    lines = [f"<b>{esc(agent_id)}</b>{title}"]
    if agent.hub:
        lines.append("The hub: people's work arrives here.")
    elif agent.reports_to:
        lines.append(f"Reports to {esc(agent.reports_to)}")
    if state is not None and state.paused:
        by = f" by {esc(clip(actor_name(state.paused_by, config), 40))}" if state.paused_by else ""
        reason = f": {esc(clip(state.paused_reason, 200))}" if state.paused_reason else ""
        lines.append(f"Status: ⏸ paused{by} since {when(state.updated_at, tz)}{reason}")
    else:
        lines.append("Status: active")
    running = await runs.current(session, agent_id)
    if running is not None:
        lines.append(
            f"Running: run #{running.id} ({esc(running.trigger)}) since "
            f"{when(running.started_at, tz)}"
        )
    if await runs.has_queued(session, agent_id):
        lines.append("A run is queued.")
    label, task = "Current task", None
    if running is not None and running.task_id is not None:
        task = await tasks.get(session, running.task_id)
    if task is None:
        label, task = "Next task", await tasks.next_for(session, agent_id, None)
    if task is not None:
        lines.append(f"{label}: #{task.id} {task.status} · {esc(one_line(task.title, 100))}")
    else:
        lines.append("No active tasks.")
    recent = await runs.recent(session, agent_id, RUNS_SHOWN)
    if recent:
        lines.append("<b>Last runs</b> (newest first)")
        for run in recent:
            outcome = f": {esc(one_line(run.outcome, 100))}" if run.outcome else ""
            lines.append(
                f"#{run.id} {run.status} · {esc(run.trigger)} · {_run_time(run, tz)}{outcome}"
            )
    else:
        lines.append("No runs yet.")
    spent = await spend_this_month(session, agent_id)
    budget = (
        state.budget_usd_month
        if state is not None and state.budget_usd_month is not None
        else agent.budget_usd_month
    )
    if budget is None:
        lines.append(f"Spend this month: {usd(spent)} (no monthly budget)")
    elif budget == 0:
        lines.append(f"Spend this month: {usd(spent)} of a {usd(0)} budget")
    else:
        share = spent / Decimal(str(budget)) * 100
        lines.append(f"Spend this month: {usd(spent)} of {usd(budget)} ({share:.0f}%)")
    await message.answer("\n".join(lines))


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
    by = (
        f" by {esc(clip(actor_name(state.paused_by, config), 40))}"
        if state is not None and state.paused_by
        else ""
    )
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
        await message.answer(f"{esc(agent_id)} will run now. {RUN_COST}")
    else:
        await message.answer(
            f"{esc(agent_id)} already had a run queued; this wake joins it, so it runs once, "
            f"now. {RUN_COST}"
        )


# What a wake costs, said where a person asks for one.
RUN_COST = (
    "With a task, a message or a HEARTBEAT.md check to do, that costs model calls; "
    "with nothing to do, it ends at once and costs nothing."
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
    """The Stop button on a run's line in the activity feed."""
    if not 0 < callback_data.id <= 2**31 - 1:
        await callback.answer("There is no such run.", show_alert=True)
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
    elif run.status == runs.RUNNING:
        await callback.answer(f"Run #{run.id} is already being stopped.")
    else:
        await callback.answer(f"Run #{run.id} is not running: it is {run.status}.")


@router.callback_query(F.data.startswith("run:"))
async def stale_run_button(callback: CallbackQuery) -> None:
    """Run button data that does not parse: forged or from another version."""
    await callback.answer("This button is not valid; nothing was changed.", show_alert=True)
