"""Agents as people see them: /agents (one line each), /agent (one agent's card) and the
answers of /pause, /resume, /wake and /stop."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from decimal import Decimal

from bot.config import AgentConfig, Config
from bot.views.text import clip, display_name, esc, one_line, percent, usd, when
from storage.models import AgentState, Run, Task

# What a wake costs, said where a person asks for one.
RUN_COST = (
    "With a task, a message or a HEARTBEAT.md check to do, that costs model calls; "
    "with nothing to do, it ends at once and costs nothing."
)


def run_time(run: Run, tz: tzinfo) -> str:
    return when(run.finished_at or run.started_at or run.queued_at, tz)


def agent_line(
    agent_id: str,
    agent: AgentConfig | None,
    *,
    paused: bool,
    running: Run | None,
    last: Run | None,
    open_tasks: int,
    tz: tzinfo,
) -> str:
    """One agent in /agents: paused or active, running or its last run, open tasks."""
    title = f" ({esc(clip(agent.title, 60))})" if agent and agent.title else ""
    parts = [f"<b>{esc(agent_id)}</b>{title}", "⏸ paused" if paused else "active"]
    if running is not None:
        parts.append(f"running since {when(running.started_at, tz)} ({esc(running.trigger)})")
    elif last is not None:
        parts.append(f"last run {last.status} {run_time(last, tz)}")
    else:
        parts.append("no runs yet")
    parts.append(f"{open_tasks} open task{'' if open_tasks == 1 else 's'}")
    return " · ".join(parts)


def listing(agent_lines: Sequence[str]) -> str:
    """/agents: a line per agent (`agent_line`); split it to send it (`split_html`)."""
    return "\n".join(["<b>Agents</b>", *agent_lines, "/agent &lt;id&gt; shows one agent."])


def paused_by(state: AgentState | None, config: Config) -> str:
    """ " by Ana" when a pause says who paused, else ""."""
    if state is None or not state.paused_by:
        return ""
    return f" by {esc(clip(display_name(state.paused_by, config), 40))}"


def card(
    agent: AgentConfig,
    state: AgentState | None,
    *,
    running: Run | None,
    queued: bool,
    task_label: str,
    task: Task | None,
    recent: Sequence[Run],
    spent: Decimal,
    config: Config,
) -> str:
    """/agent <id>: status, current (or next) task, last runs, spend this month."""
    tz = config.tz
    title = f" — {esc(clip(agent.title, 80))}" if agent.title else ""
    lines = [f"<b>{esc(agent.id)}</b>{title}"]
    if agent.hub:
        lines.append("The hub: people's work arrives here.")
    elif agent.reports_to:
        lines.append(f"Reports to {esc(agent.reports_to)}")
    if state is not None and state.paused:
        reason = f": {esc(clip(state.paused_reason, 200))}" if state.paused_reason else ""
        lines.append(
            f"Status: ⏸ paused{paused_by(state, config)} since {when(state.updated_at, tz)}"
            f"{reason}"
        )
    else:
        lines.append("Status: active")
    if running is not None:
        lines.append(
            f"Running: run #{running.id} ({esc(running.trigger)}) since "
            f"{when(running.started_at, tz)}"
        )
    if queued:
        lines.append("A run is queued.")
    if task is not None:
        lines.append(f"{task_label}: #{task.id} {task.status} · {esc(one_line(task.title, 100))}")
    else:
        lines.append("No active tasks.")
    if recent:
        lines.append("<b>Last runs</b> (newest first)")
        for run in recent:
            outcome = f": {esc(one_line(run.outcome, 100))}" if run.outcome else ""
            lines.append(
                f"#{run.id} {run.status} · {esc(run.trigger)} · {run_time(run, tz)}{outcome}"
            )
    else:
        lines.append("No runs yet.")
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
        share = percent(spent, Decimal(str(budget)))
        lines.append(f"Spend this month: {usd(spent)} of {usd(budget)} ({share})")
    return "\n".join(lines)
