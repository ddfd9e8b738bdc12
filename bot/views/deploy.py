"""Deploys as people see them: the steps on the approval message as they run, the report for
the approvals feed, and the same report as plain text for the requesting task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bot.views.text import esc
from storage.models import DeployRun
from storage.statuses import DeployStatus

HEADLINES: dict[str, str] = {
    DeployStatus.SUCCEEDED: "✅ verified",
    DeployStatus.ROLLED_BACK: "↩️ failed, rolled back and verified",
    DeployStatus.FAILED: "❌ failed",
}


class StepShown(Protocol):
    """One step of a deploy (integrations.deploy.Step)."""

    @property
    def name(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def seconds(self) -> float: ...
    @property
    def detail(self) -> str: ...


def step_lines(steps: Sequence[StepShown]) -> list[str]:
    """The steps as plain text, one line each."""
    return [
        f"{'✅' if step.ok else '❌'} {step.name} ({step.seconds:.1f} s): {step.detail}"
        for step in steps
    ]


def progress(run: DeployRun, steps: Sequence[StepShown], running: str | None) -> str:
    """The deploy's steps so far, for the approval message (HTML); `running`: the step
    under way."""
    lines = [f"<b>Deploy run #{run.id}</b>"]
    lines += [esc(line) for line in step_lines(steps)]
    if running is not None:
        lines.append(f"⏳ {esc(running)}…")
    return "\n".join(lines)


def report(run: DeployRun, status: str, steps: Sequence[StepShown], tail: str) -> str:
    """The deploy report for the approvals feed (HTML)."""
    ref = f" at {esc(run.ref)}" if run.ref else ""
    lines = [f"<b>Deploy run #{run.id}</b> of {esc(run.target)}{ref}: {HEADLINES[status]}"]
    lines += [esc(line) for line in step_lines(steps)]
    if tail:
        lines.append(f"<pre>{esc(tail[-3000:])}</pre>")
    return "\n".join(lines)


def note(run: DeployRun, status: str, steps: Sequence[StepShown], tail: str) -> str:
    """The same report as plain text, for the requesting task."""
    ref = f" at {run.ref}" if run.ref else ""
    lines = [f"Deploy run #{run.id} of {run.target}{ref}: {HEADLINES[status]}"]
    lines += step_lines(steps)
    if tail:
        lines += ["Last output:", tail[-3000:]]
    return "\n".join(lines)
