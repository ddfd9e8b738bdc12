"""/status: the fleet at a glance, read from the database and the live poll monitor."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import Message

from bot.config import Config, Role
from bot.polling import PollMonitor
from bot.text import esc, when
from handlers.registry import command
from storage.status import OPEN_TASK_STATUSES, SummaryCache

router = Router(name=__name__)


@command(router, "status", Role.viewer)
async def status(
    message: Message, status_cache: SummaryCache, config: Config, poll_monitor: PollMonitor
) -> None:
    """Fleet summary: agents, tasks, approvals, incidents, jobs"""
    summary = await status_cache.get()
    tz = config.tz
    agents = len(config.agents)
    paused = sorted(summary.paused_agents & {a.id for a in config.agents})
    lines = [
        "<b>Fleet status</b>",
        f"Agents: {agents}"
        + (f" ({len(paused)} paused: {esc(', '.join(paused))})" if paused else ""),
    ]
    tasks = [
        f"{s} {summary.open_tasks[s]}" for s in OPEN_TASK_STATUSES if summary.open_tasks.get(s)
    ]
    lines.append("Open tasks: " + (", ".join(tasks) if tasks else "none"))
    lines.append(f"Pending approvals: {summary.pending_approvals}")
    incidents = [f"{sev} {n}" for sev, n in sorted(summary.open_incidents.items())]
    lines.append("Open incidents: " + (", ".join(incidents) if incidents else "none"))
    waiting = summary.outbox.get("pending", 0)
    failed = summary.outbox.get("failed", 0)
    lines.append(f"Outbox: {waiting} waiting, {failed} failed")
    lines.append(f"Last completed poll: {when(poll_monitor.last_poll_at, tz)}")
    if summary.silences:
        lines.append(
            "Silences: "
            + ", ".join(f"{esc(s.matcher)} until {when(s.until, tz)}" for s in summary.silences)
        )
    if summary.jobs:
        lines.append("<b>Jobs</b> (last success)")
        for beat in summary.jobs:
            error = (
                " ⚠ last run failed"
                if beat.last_error_at
                and (beat.last_success is None or beat.last_error_at > beat.last_success)
                else ""
            )
            lines.append(f"{esc(beat.job_id)}: {when(beat.last_success, tz)}{error}")
    await message.answer("\n".join(lines))
