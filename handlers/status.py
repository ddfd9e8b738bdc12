"""/status: the fleet at a glance, read from the database and the live poll monitor."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import tzinfo

from aiogram.types import Message

from bot.config import Config, Role
from bot.polling import PollMonitor
from bot.views.text import esc, one_line, when
from handlers.registry import Routes, command
from storage.models import JobBeat, Run
from storage.status import OPEN_TASK_STATUSES, SummaryCache

router = Routes(__name__)


@command(router, "status", Role.viewer)
async def status(
    message: Message,
    status_cache: SummaryCache,
    config: Config,
    poll_monitor: PollMonitor,
    job_intervals: Mapping[str, int],
) -> None:
    """Fleet summary: agents, tasks, approvals, incidents, runs in flight, jobs"""
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
    lines.append(f"Last completed poll: {when(poll_monitor.last_poll_at, tz, seconds=True)}")
    if summary.silences:
        lines.append(
            "Silences: "
            + ", ".join(f"{esc(s.matcher)} until {when(s.until, tz)}" for s in summary.silences)
        )
    lines += running_lines(summary.running, tz)
    lines.append(jobs_line(summary.jobs, tz, job_intervals))
    await message.answer("\n".join(lines))


# What each scheduled job does, for people; ids with a ":" name a mailbox, check or agent.
JOB_NAMES = {
    "telegram-poll": "Telegram polling",
    "runs-prune": "old idle runs clean-up",
    "approvals-expire": "approval reminders and expiry",
    "triage-digest": "daily email digest",
    "alerts": "posting alerts",
    "watchdog": "watchdog",
    "config-watch": "config file watch",
}
JOB_KINDS = {"triage": "mailbox {}", "check": "check {}", "heartbeat": "{}'s heartbeat"}


def job_name(job_id: str) -> str:
    """ "approvals-expire" -> "approval reminders and expiry", "check:site" -> "check site"."""
    kind, _, rest = job_id.partition(":")
    if rest and kind in JOB_KINDS:
        return JOB_KINDS[kind].format(rest)
    return JOB_NAMES.get(job_id, job_id)


def failing(beat: JobBeat) -> bool:
    """The job's latest run failed (a success since then clears it)."""
    return beat.last_error_at is not None and (
        beat.last_success is None or beat.last_error_at > beat.last_success
    )


def jobs_line(beats: list[JobBeat], tz: tzinfo, scheduled: Collection[str] = ()) -> str:
    """ "Jobs: all 8 OK", or the failing ones by name, with their last success and error.
    `scheduled`: the jobs of this process (one that has not run yet counts as OK); beats of
    jobs no longer scheduled (a check since removed) are left out."""
    if scheduled:
        beats = [beat for beat in beats if beat.job_id in scheduled]
    total = len(scheduled) or len(beats)
    if not total:
        return "Jobs: none scheduled"
    bad = [beat for beat in beats if failing(beat)]
    if not bad:
        return f"Jobs: all {total} OK"
    lines = [f"Jobs: {total - len(bad)} of {total} OK; failing:"]
    for beat in bad:
        error = f": {esc(one_line(beat.last_error, 120))}" if beat.last_error else ""
        lines.append(
            f"⚠ {esc(job_name(beat.job_id))} (last success {when(beat.last_success, tz)}){error}"
        )
    return "\n".join(lines)


def running_lines(running: list[Run], tz: tzinfo) -> list[str]:
    """ "Running now: coder on task #3 since 17:50 CET (assignment)", one line per run."""
    if not running:
        return ["Running now: nothing"]
    lines = ["Running now:"]
    for run in running:
        on = f" on task #{run.task_id}" if run.task_id is not None else ""
        lines.append(
            f"• {esc(run.agent_id)}{on} since {when(run.started_at, tz)} ({esc(run.trigger)})"
        )
    return lines
