"""Runs as people see them in the feeds: a run's line in the activity feed (posted with the
Stop button, `bot.views.buttons.stop_button`, and edited as the run advances and ends), and
the alerts of runs that fail, crash or keep dying."""

from __future__ import annotations

from datetime import datetime, tzinfo
from decimal import Decimal

from bot.views.text import esc, usd, when


def icon(status: str, *, alerted: bool = False) -> str:
    """How a run ended, at a glance: only a success is ✅ (`alerted`: the gateway stopped it
    because the budget is used up)."""
    if status == "succeeded":
        return "✅"
    if status == "cancelled":
        return "⏹"
    if alerted:
        return "💸"
    if status == "deferred":
        return "⏸"
    return "❌"


def on_task(task_id: int | None) -> str:
    return f" on task #{task_id}" if task_id is not None else ""


def token_count(input_tokens: int, output_tokens: int) -> str:
    return f"{input_tokens}+{output_tokens} tokens"


def progress_line(
    agent_id: str, task_id: int | None, step: str, tokens: int, cost: Decimal | float
) -> str:
    """A run's line while it runs: what it does now, tokens and cost so far."""
    return (
        f"⏳ <b>{esc(agent_id)}</b>{on_task(task_id)}: {esc(step[:200])} · "
        f"{tokens} tokens · {usd(cost, places=4)}"
    )


def end_line(mark: str, agent_id: str, task_id: int | None, outcome: str, tokens: str) -> str:
    """A run's line once it ended: how, and what it used."""
    return f"{mark} <b>{esc(agent_id)}</b>{on_task(task_id)}: {esc(outcome[:300])} ({tokens})"


def crashed(agent_id: str) -> str:
    return f"❌ <b>{esc(agent_id)}</b>: crashed"


def interrupted(agent_id: str) -> str:
    return f"⏹ <b>{esc(agent_id)}</b>: interrupted by shutdown"


def failed_alert(
    agent_id: str, count: int, since: datetime | None, tz: tzinfo, detail: str
) -> str:
    """One alert per streak of failed runs of an agent, edited with the count."""
    if count <= 1:
        return f"❌ <b>{esc(agent_id)}</b>: a run failed{esc(detail)}"
    first = when(since, tz) if since is not None else "?"
    return f"❌ <b>{esc(agent_id)}</b>: {count} runs failed since {first}, last{esc(detail)}"


def kept_dying(task_id: int, agent_id: str) -> str:
    """The alert of a task blocked because its runs' leases kept expiring."""
    return f"⛔ Task #{task_id} of {esc(agent_id)} blocked: its runs kept dying (retries used up)."
