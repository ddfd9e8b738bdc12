"""A pipeline run as one Telegram message: its steps with status, duration, cost and files,
and the Retry step / Cancel buttons. Pure functions; the pipeline worker edits the message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from aiogram.filters.callback_data import CallbackData

from bot.views.text import esc, usd
from storage.models import DbId, PipelineRun, PipelineStep, utcnow
from storage.statuses import PipelineStatus

Button = dict[str, str]  # as storage.outbox.Button (views come before storage)


class PipelineCb(CallbackData, prefix="pl"):
    """A pipeline run's button: `a` is r (retry the step that stopped) or c (cancel)."""

    a: str
    id: DbId


# Run and step statuses (storage.pipelines) and how they show.
MARKS: dict[str, str] = {
    PipelineStatus.WAITING: "⏳",
    PipelineStatus.RUNNING: "▶️",
    PipelineStatus.DONE: "✅",
    PipelineStatus.FAILED: "❌",
    PipelineStatus.BLOCKED: "⛔",
    PipelineStatus.CANCELLED: "✖️",
}


def took(start: datetime | None, end: datetime | None, now: datetime | None = None) -> str:
    if start is None:
        return ""
    seconds = int(((end or now or utcnow()) - start).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def render(
    run: PipelineRun,
    steps: Sequence[PipelineStep],
    costs: Mapping[int, Decimal],
    now: datetime | None = None,
) -> str:
    """The run's message (HTML)."""
    mark = MARKS.get(run.status, "▪️")
    lines = [
        f"{mark} <b>Pipeline run #{run.id}</b> · {esc(run.pipeline)} · {esc(run.status)}",
        f"Topic: {esc(run.topic[:300])}",
    ]
    if run.task_id is not None:
        lines.append(f"Task #{run.task_id} · files in {esc(run.folder)}:{run.id}/")
    for step in steps:
        parts = [f"{MARKS.get(step.status, '▪️')} {step.position + 1}. {esc(step.step)}"]
        parts.append(esc(step.agent))
        parts.append(esc(step.status))
        duration = took(step.started_at, step.finished_at, now)
        if duration:
            parts.append(duration)
        if step.task_id is not None:
            parts.append(f"task #{step.task_id}")
            parts.append(usd(costs.get(step.task_id, Decimal(0))))
        if step.produces:
            parts.append(f"→ {esc(step.produces)}")
        lines.append(" · ".join(parts))
        if step.reason and step.status != PipelineStatus.DONE:
            lines.append(f"    {esc(step.reason[:300])}")
    if run.reason and run.status != PipelineStatus.DONE:
        lines.append(f"<i>{esc(run.reason[:500])}</i>")
    return "\n".join(lines)


def buttons(run: PipelineRun) -> list[list[Button]]:
    row: list[Button] = []
    if run.status == PipelineStatus.BLOCKED:
        row.append({"text": "Retry step", "callback_data": PipelineCb(a="r", id=run.id).pack()})
    if run.status in (PipelineStatus.RUNNING, PipelineStatus.BLOCKED):
        row.append({"text": "Cancel", "callback_data": PipelineCb(a="c", id=run.id).pack()})
    return [row] if row else []
