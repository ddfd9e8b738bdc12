"""/status as people read it: the fleet at a glance, the runs in flight and the jobs.

The summary is `storage.status.FleetSummary`, read here through the `Summary` protocol
(views import no storage queries).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from bot.config import Config
from bot.views.nodes import node_lines
from bot.views.tasks import CLOSED
from bot.views.text import esc, one_line, when
from storage.models import JobBeat, Node, Run, Silence
from storage.statuses import TaskStatus

OPEN_TASK_STATUSES = tuple(s for s in TaskStatus if s not in CLOSED)


class Summary(Protocol):
    """What /status counts (storage.status.FleetSummary)."""

    @property
    def paused_agents(self) -> Collection[str]: ...
    @property
    def open_tasks(self) -> Mapping[str, int]: ...
    @property
    def pending_approvals(self) -> int: ...
    @property
    def nodes(self) -> Sequence[Node]: ...
    @property
    def node_runs(self) -> Mapping[str, int]: ...
    @property
    def open_incidents(self) -> Mapping[str, int]: ...
    @property
    def jobs(self) -> Sequence[JobBeat]: ...
    @property
    def outbox(self) -> Mapping[str, int]: ...
    @property
    def silences(self) -> Sequence[Silence]: ...
    @property
    def running(self) -> Sequence[Run]: ...


def status(
    summary: Summary,
    config: Config,
    last_poll_at: datetime | None,
    job_intervals: Collection[str],
    now: datetime,
    alive_within: timedelta,
) -> str:
    """The /status message. `alive_within`: how recently a node must have renewed to count
    as alive."""
    tz = config.tz
    agents = len(config.agents)
    paused = sorted(set(summary.paused_agents) & {a.id for a in config.agents})
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
    lines.append(f"Last completed poll: {when(last_poll_at, tz, seconds=True)}")
    lines += [
        esc(line)
        for line in node_lines(summary.nodes, summary.node_runs, config, tz, now, alive_within)
    ]
    if summary.silences:
        lines.append(
            "Silences: "
            + ", ".join(f"{esc(s.matcher)} until {when(s.until, tz)}" for s in summary.silences)
        )
    lines += running_lines(summary.running, tz)
    lines.append(jobs_line(summary.jobs, tz, job_intervals))
    return "\n".join(lines)


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


def jobs_line(beats: Sequence[JobBeat], tz: tzinfo, scheduled: Collection[str] = ()) -> str:
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


def running_lines(running: Sequence[Run], tz: tzinfo) -> list[str]:
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
