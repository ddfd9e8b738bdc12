"""The process adapter: a run of an `adapter = "process"` agent starts a coding CLI (Claude
Code, Codex) in a checkout of the agent's repo, instead of model turns through the gateway.

A run works on the agent's task only: it prepares the task's checkout (a clone of `repo` on
`fleet/<task-id>-<slug>` under the workspace, kept for later runs of the task), gives the first
CLI that is not cooling down the brief on stdin, logs its output to a file (an artifact), and
reads its final output: the result text becomes a comment, its usage and cost a usage row
(so budgets, /costs and the 80% / 100% rules apply). A CLI that reports a rate or usage limit
cools down like a model in the gateway and the next one starts at once; when all are cooling
down the run is deferred. What the run changed is evidence from git: a task is done only
with at least one commit on its branch, else it goes to review with "no commits".

Stop: `stop(run_id, by)` kills the CLI's process group; the run ends cancelled, the task is
blocked with who stopped it, and the checkout is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from agents.gateway import Gateway, GatewayError
from agents.turn import TurnResult
from bot.config import AgentConfig, CodingCli, Config
from bot.logs import RedactingFormatter
from bot.views import coding as views
from bot.views.buttons import stop_button
from bot.views.text import usd
from integrations import coding_cli, git, process
from storage import artifacts, outbox, tasks
from storage.db import Database
from storage.models import Task, utcnow
from storage.statuses import TaskStatus

log = logging.getLogger(__name__)

COOLDOWN = timedelta(minutes=30)  # a limited CLI rests this long (CLIs rarely say how long)
PURPOSE = "coding"
CANCELLED = "cancelled"

# run id -> process id of the CLI running for it (its process group), for Stop.
_running: dict[int, int] = {}
_stopped: dict[int, str] = {}  # run id -> who pressed Stop


def stop(run_id: int, by: str = "an operator") -> bool:
    """Kill the CLI of `run_id` with its children; False if no CLI is running for it here."""
    pid = _running.get(run_id)
    if pid is None:
        return False
    _stopped[run_id] = by
    process.kill(pid)
    return True


def is_running(run_id: int) -> bool:
    return run_id in _running


@dataclass
class Attempt:
    cli: CodingCli
    report: coding_cli.Report
    output: str
    exit_code: int | None
    cost: Decimal
    log_path: Path


async def run(
    *,
    config: Config,
    db: Database,
    gateway: Gateway,
    agent: AgentConfig,
    folder: Path,
    run_id: int,
    task: Task | None,
    system: str,
    brief: str,
) -> TurnResult:
    if task is None:
        return TurnResult(status="succeeded", outcome="no task: a coding agent works on tasks")
    try:
        await gateway.check_budget(agent)
    except GatewayError as err:
        return TurnResult(
            status="deferred" if err.retry_at else "failed",
            outcome=str(err),
            retry_at=err.retry_at,
            alerted=err.alerted,
        )
    assert agent.repo is not None
    branch = git.branch_name(task.id, task.title)
    checkout = folder / "checkouts" / str(task.id)
    try:
        base = await git.prepare(_repo(config, agent.repo), checkout, branch)
    except git.GitError as err:
        return TurnResult(status="failed", outcome=f"cannot prepare the checkout: {err}")
    await _running_line(config, db, agent, run_id, task, branch)
    result = await _work(
        config, db, gateway, agent, folder, run_id, task, checkout, branch, base, system, brief
    )
    await _ran_line(config, db, agent, run_id, task, result)
    return result


async def _work(
    config: Config,
    db: Database,
    gateway: Gateway,
    agent: AgentConfig,
    folder: Path,
    run_id: int,
    task: Task,
    checkout: Path,
    branch: str,
    base: str,
    system: str,
    brief: str,
) -> TurnResult:
    """The CLIs in order, until one ran (or all are limited, missing or cooling down)."""
    stdin = _stdin(system, brief, branch).encode()
    limit = agent.timeout.total_seconds()
    problems: list[str] = []
    attempt: Attempt | None = None
    for cli in agent.clis:
        key = (f"cli:{cli.id}", "process")
        if gateway.cooling_until(key) is not None:
            problems.append(f"{cli.id} cooling down")
            continue
        env = process.minimal_environment(cli.env, config.own_secrets())
        program = cli.argv[0]
        if shutil.which(program, path=env.get("PATH")) is None:
            problems.append(f"{cli.id}: the program {program!r} is not on PATH")
            continue
        log_path = folder / "logs" / f"run-{run_id}-{cli.id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            done = await process.run(
                cli.argv,
                shell=False,
                limit=limit,
                cwd=checkout,
                env=env,
                stdin=stdin,
                log=log_path,
                started=lambda pid: _running.__setitem__(run_id, pid),
            )
        except process.CommandError as err:
            problems.append(f"{cli.id}: {err}")
            continue
        finally:
            _running.pop(run_id, None)
        # The CLI's output reaches comments and chats: the fleet's secrets are taken out.
        output = RedactingFormatter(config.secret_values()).redact(done.output)
        report = coding_cli.parse(cli.argv, output, done.exit_code)
        cost = Decimal(0)
        if report.reported_usage:
            cost = gateway.record_external(
                agent,
                run_id,
                purpose=PURPOSE,
                model=cli.model or cli.id,
                profile=f"cli:{cli.id}",
                input_tokens=report.input_tokens,
                output_tokens=report.output_tokens,
                cache_read_tokens=report.cache_read_tokens,
                cache_write_tokens=report.cache_write_tokens,
                cost=report.cost_usd,
                latency_ms=int((time.monotonic() - started) * 1000),
                error=report.result[:500] if report.is_error else None,
            )
        attempt = Attempt(cli, report, output, done.exit_code, cost, log_path)
        await _record_log(db, agent, run_id, task.id, folder, log_path)
        if run_id in _stopped or done.exit_code is None:
            break
        if report.limited:
            gateway.cool_down(key, _until(report.retry_at))
            problems.append(f"{cli.id} hit a rate or usage limit")
            attempt = None
            continue
        break
    if run_id in _stopped:
        by = _stopped.pop(run_id)
        return await _finish(db, agent, task, checkout, branch, base, attempt, by)
    if attempt is None:
        cooling = [gateway.cooling_until((f"cli:{c.id}", "process")) for c in agent.clis]
        if all(until is not None for until in cooling):
            retry_at = min(until for until in cooling if until is not None)
            return TurnResult(
                status="deferred",
                outcome="every coding CLI is cooling down: " + "; ".join(problems),
                retry_at=retry_at,
            )
        return TurnResult(status="failed", outcome="no coding CLI ran: " + "; ".join(problems))
    return await _finish(db, agent, task, checkout, branch, base, attempt, "", limit)


async def _running_line(
    config: Config, db: Database, agent: AgentConfig, run_id: int, task: Task, branch: str
) -> None:
    """The activity feed's line for a coding run in progress, with its Stop button."""
    feed = config.feed("activity")
    if feed is None:
        return
    async with db.claim() as session:
        await outbox.enqueue(
            session,
            outbox.Destination(feed.chat_id, feed.topic, "activity"),
            views.running_line(agent, run_id, task, branch),
            buttons=[[stop_button(run_id)]],
            dedup_key=f"coding-running:{run_id}",
        )


def _until(reset: datetime | None) -> datetime:
    """When a limited CLI may be tried again: when it said its limit resets (within a day),
    else after COOLDOWN."""
    now = utcnow()
    if reset is not None and now < reset < now + timedelta(days=1):
        return reset
    return now + COOLDOWN


async def _ran_line(
    config: Config, db: Database, agent: AgentConfig, run_id: int, task: Task, result: TurnResult
) -> None:
    """The running line once the run ended: its outcome, and no Stop button any more."""
    feed = config.feed("activity")
    if feed is None:
        return
    async with db.claim() as session:
        await outbox.enqueue(
            session,
            outbox.Destination(feed.chat_id, feed.topic, "activity"),
            views.ran_line(agent.id, run_id, task, result.status),
            edit_of=f"coding-running:{run_id}",
            dedup_key=f"coding-ran:{run_id}",
        )


def _repo(config: Config, repo: str) -> str:
    """A relative path is relative to the config file, like workspaces."""
    if "://" in repo or repo.startswith("git@") or Path(repo).is_absolute():
        return repo
    return str(config.path.parent / repo)


def _stdin(system: str, brief: str, branch: str) -> str:
    # The model runs' closing paragraph names tools a CLI does not have.
    brief = brief.split("\n\nWork with the tools.", 1)[0]
    return "\n\n".join(
        [
            system,
            brief,
            f"You work in a git checkout on the branch {branch}. Commit your changes on this "
            "branch (and push it if the repository has a remote); the task counts as done "
            "only with at least one commit. End with a short summary of what you did.",
        ]
    )


async def _record_log(
    db: Database, agent: AgentConfig, run_id: int, task_id: int, folder: Path, path: Path
) -> None:
    data = await asyncio.to_thread(lambda: path.read_bytes() if path.exists() else b"")
    async with db.claim() as session:
        await artifacts.record(
            session,
            task_id=task_id,
            run_id=run_id,
            agent_id=agent.id,
            root="workspace",
            path=str(path.relative_to(folder)),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            kind="log",
        )


async def _finish(
    db: Database,
    agent: AgentConfig,
    task: Task,
    checkout: Path,
    branch: str,
    base: str,
    attempt: Attempt | None,
    stopped_by: str,
    limit: float = 0,
) -> TurnResult:
    try:
        found = await git.evidence(checkout, branch, base)
    except git.GitError as err:
        found = git.Evidence(branch=branch)
        log.warning("no evidence from the checkout of task #%d: %s", task.id, err)
    cli = attempt.cli.id if attempt else "no CLI"
    cost = attempt.cost if attempt else Decimal(0)
    report = attempt.report if attempt else coding_cli.Report()
    pr = coding_cli.pr_url(attempt.output) if attempt else None
    summary = _summary(cli, found, cost, pr)
    actor = f"agent:{agent.id}"
    result = TurnResult(
        status="succeeded",
        outcome=summary,
        changed=True,
        turns=report.turns,
        input_tokens=report.input_tokens,
        output_tokens=report.output_tokens,
        cost_usd=cost,
    )
    if stopped_by:
        # A person stopped it: blocked until someone unblocks it, not retried by itself.
        result.status = CANCELLED
        result.outcome = f"stopped by {stopped_by}; the checkout is kept. {summary}"
        async with db.claim() as session:
            await tasks.transition(
                session,
                task.id,
                TaskStatus.BLOCKED,
                actor=actor,
                note=result.outcome,
                only_from=(TaskStatus.IN_PROGRESS,),
            )
        return result
    assert attempt is not None
    if attempt.exit_code is None:
        result.status = "failed"
        result.outcome = (
            f"{cli} timed out after {int(limit)}s; its processes were killed. {summary}"
        )
        return result
    async with db.claim() as session:
        text = report.result.strip() or "(the CLI printed no result)"
        await tasks.comment(session, task.id, actor=actor, body=f"{text}\n\n{summary}"[:8000])
        if report.is_error:
            result.status = "failed"
            result.outcome = f"{cli} reported an error: {report.result[:300]}"
            return result
        if found.commits and found.pushed is not False:
            await tasks.transition(session, task.id, TaskStatus.DONE, actor=actor, note=summary)
        else:
            why = "no commits" if not found.commits else "the branch is not on the remote"
            await tasks.transition(
                session, task.id, TaskStatus.IN_REVIEW, actor=actor, note=f"{why}. {summary}"
            )
    return result


def _summary(cli: str, found: git.Evidence, cost: Decimal, pr: str | None) -> str:
    count = len(found.commits)
    parts = [f"{cli} on {found.branch}: {count} commit{'s' if count != 1 else ''}"]
    if found.commits:
        parts.append(f"(latest {found.commits[0]})")
    if found.diff_stat:
        parts.append(f"· {found.diff_stat}")
    if found.pushed:
        parts.append("· pushed")
    elif found.pushed is False and found.commits:
        parts.append("· not pushed")
    if pr:
        parts.append(f"· PR {pr}")
    parts.append(f"· {usd(cost, places=4)}")
    return " ".join(parts)
