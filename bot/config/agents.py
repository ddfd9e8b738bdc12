"""The tables of agents and what they work with: `[[agents]]` (with their exec policy, coding
CLIs and queue), `[[folders]]` and `[[pipelines]]`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from bot.config.values import (
    NODE_NAME,
    Duration,
    Loc,
    QuietRange,
    Section,
    at_most,
    env_names,
)

FolderMode = Literal["rw", "ro"]
# The root name of an agent's own workspace in file paths ("workspace:notes.md").
WORKSPACE_ROOT = "workspace"


class FolderConfig(Section):
    """A shared folder agents may be granted as a file root (a handoff folder)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    path: Path


class ExecPolicy(Section):
    """Which commands an agent's run_command may run: glob patterns over the argv joined by
    spaces. deny wins, then allow, then ask; a command no pattern names is asked."""

    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)  # variables passed on besides PATH, HOME, LANG
    max_timeout: Duration = timedelta(minutes=10)

    @field_validator("env")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return env_names(value)


class CodingCli(Section):
    """A coding CLI a process agent runs (Claude Code, Codex): its argv, the variables holding
    its own keys (passed on besides PATH, HOME, LANG), and the model its tokens are priced
    as when it reports tokens but no cost (Codex)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    argv: list[str] = Field(min_length=1)
    env: list[str] = Field(default_factory=list)
    model: str | None = None

    @field_validator("env")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return env_names(value)


class QueueConfig(Section):
    """The nightly coding queue: at `cron`, up to `max_tasks` of the agent's todo tasks run."""

    cron: str = "0 2 * * *"
    max_tasks: int = Field(default=1, ge=1, le=20)


class AgentConfig(Section):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    title: str = ""
    hub: bool = False
    reports_to: str | None = None
    workspace: Path
    model: str
    fallbacks: list[str] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=lambda: ["primary"])
    heartbeat: Annotated[timedelta, at_most("30d")] | None = None
    cron: str | None = None
    quiet_hours: QuietRange | None = None
    budget_usd_month: float | None = Field(default=None, ge=0)
    authority: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    max_retries: int = Field(default=3, ge=0)
    folders: dict[str, FolderMode] = Field(default_factory=dict)  # folder id -> rw | ro
    max_file_kb: int = Field(default=512, ge=1, le=1_048_576)
    exec: ExecPolicy | None = None  # None: the agent has no run_command tool
    # "process": each run starts a coding CLI in a checkout of `repo` instead of model turns.
    adapter: Literal["anthropic", "process"] = "anthropic"
    clis: list[CodingCli] = Field(default_factory=list)
    repo: str | None = None  # a git URL or path (process agents)
    timeout: Duration = timedelta(minutes=45)  # of one CLI run (process agents)
    queue: QueueConfig | None = None
    # the nodes that may run it (README: Several machines); empty: any node
    runs_on: list[Annotated[str, Field(pattern=NODE_NAME)]] = Field(default_factory=list)

    def cross_problems(self) -> Iterator[tuple[Loc, str]]:
        if self.hub and self.reports_to is not None:
            yield ("reports_to",), "the hub reports to no agent"
        if self.heartbeat and self.cron:
            yield (), "give either heartbeat or cron, not both"
        if self.adapter == "process" and (not self.clis or not self.repo):
            yield (), 'adapter = "process" needs clis and repo'


class PipelineStep(Section):
    """One step of a pipeline: `agent` writes `produces` (a file name in the run's folder),
    after reading the files it `consumes` (each produced by an earlier step)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    agent: str
    produces: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    consumes: list[str] = Field(default_factory=list)
    instructions: str = ""


class PipelineConfig(Section):
    """A sequence of steps run by `/pipeline <id> <topic>` or the hub's start_pipeline tool;
    the steps hand files forward in `<folder>/<run id>/`."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    folder: str
    steps: list[PipelineStep] = Field(min_length=1, max_length=20)

    def cross_problems(self) -> Iterator[tuple[Loc, str]]:
        """Step ids are unique; every consumed file is produced by an earlier step (a later
        one would never have written it yet)."""
        produced: set[str] = set()
        step_ids: set[str] = set()
        for j, step in enumerate(self.steps):
            if step.id in step_ids:
                yield ("steps", j, "id"), f'duplicate step "{step.id}"'
            step_ids.add(step.id)
            for k, name in enumerate(step.consumes):
                if name not in produced:
                    yield (
                        ("steps", j, "consumes", k),
                        f'"{name}" is not produced by an earlier step',
                    )
            if step.produces is not None:
                produced.add(step.produces)
