"""The process adapter: fake `claude` and `codex` executables (tests/bin, real programs
printing the real CLIs' output shapes and committing in the checkout), a local bare git
repository as the remote, the real gateway and database."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from agents import process_adapter
from agents.gateway import Gateway
from agents.turn import TurnResult
from bot.config import Config, load_config
from integrations import coding_cli, git
from storage import runs, tasks
from storage.db import Database
from storage.models import Artifact, Task, TaskEvent, Usage, utcnow
from storage.statuses import RunStatus, TaskStatus
from tests.fleet import ANTHROPIC_KEY, write_config

BIN = Path(__file__).parent / "bin"

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"

[[agents]]
id = "dev"
reports_to = "hub"
workspace = "workspaces/dev"
model = "claude-sonnet-4-6"
adapter = "process"
repo = "REPO"
timeout = "TIMEOUT"
clis = [
  { id = "claude", argv = ["claude", "-p", "--output-format", "json"] },
  { id = "codex", argv = ["codex", "exec", "--json"], model = "claude-haiku-4-5" },
]
"""


def make_remote(tmp_path: Path) -> Path:
    """A bare repository with one commit on main, as the agent's remote."""
    seed = tmp_path / "seed"
    remote = tmp_path / "remote.git"
    ident = ["-c", "user.name=T", "-c", "user.email=t@example.test"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    (seed / "README.md").write_text("project\n")
    subprocess.run(["git", "-C", str(seed), "add", "."], check=True)
    subprocess.run(["git", "-C", str(seed), *ident, "commit", "-qm", "initial"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(remote)], check=True)
    return remote


@dataclass
class Setup:
    config: Config
    db: Database
    gateway: Gateway
    remote: Path
    workspace: Path


@pytest.fixture
async def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    remote = make_remote(tmp_path)
    agents = AGENTS.replace("REPO", str(remote)).replace("TIMEOUT", "3s")
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", agents=agents))
    db = Database(config.database.url)
    await db.migrate()
    gateway = Gateway(config, db)
    yield Setup(config, db, gateway, remote, tmp_path / "workspaces" / "dev")
    await gateway.close()
    await db.dispose()


async def start(s: Setup, title: str, body: str = "") -> tuple[Task, int]:
    """A task in progress for `dev` and a claimed run for it."""
    async with s.db.claim() as session:
        task = await tasks.create(
            session, title=title, body=body, assignee="dev", creator="person:1001", max_retries=3
        )
        await tasks.transition(session, task.id, TaskStatus.IN_PROGRESS, actor="agent:dev")
        await runs.wake(session, "dev", "manual", task_id=task.id)
    async with s.db.claim() as session:
        [claimed] = await runs.claim_due(
            session, "test", timedelta(minutes=5), exclude=set(), limit=1
        )
        loaded = await tasks.get(session, task.id)
        # Closed at once: the rows the adapter writes only need the run to exist.
        await runs.finish(session, claimed.run_id, "test", RunStatus.SUCCEEDED, "test")
    assert loaded is not None
    return loaded, claimed.run_id


async def run(s: Setup, task: Task, run_id: int, timeout: timedelta | None = None) -> TurnResult:
    agent = next(a for a in s.config.agents if a.id == "dev")
    if timeout is not None:
        agent = agent.model_copy(update={"timeout": timeout})
    result = await process_adapter.run(
        config=s.config,
        db=s.db,
        gateway=s.gateway,
        agent=agent,
        folder=s.workspace,
        run_id=run_id,
        task=task,
        system="You are dev.",
        brief=f"Your task: #{task.id} {task.title}\n{task.body}",
    )
    await s.gateway.flush()
    return result


def remote_log(remote: Path, branch: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(remote), "log", "--format=%s", branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()


async def test_a_task_ends_with_a_commit_on_its_branch_a_comment_and_the_reported_cost(
    setup: Setup,
) -> None:
    task, run_id = await start(setup, "Add the greeting")
    result = await run(setup, task, run_id)
    branch = f"fleet/{task.id}-add-the-greeting"
    assert result.status == "succeeded", result.outcome
    assert result.outcome.startswith(f"claude on {branch}: 1 commit")
    assert "1 file changed" in result.outcome and "pushed" in result.outcome
    assert "$0.0421" in result.outcome
    assert remote_log(setup.remote, branch)[0].startswith("claude: work on the task")
    async with setup.db.session() as session:
        done = await tasks.get(session, task.id)
        comments = (
            await session.execute(
                select(TaskEvent.body).where(
                    TaskEvent.task_id == task.id, TaskEvent.kind == "comment"
                )
            )
        ).scalars()
        [usage] = (await session.execute(select(Usage))).scalars().all()
        [log_file] = (await session.execute(select(Artifact))).scalars().all()
    assert done is not None and done.status == TaskStatus.DONE
    assert any("Implemented the task and committed it (claude)." in c for c in comments)
    assert (usage.model, usage.profile, usage.purpose) == ("claude", "cli:claude", "coding")
    assert usage.cost_usd == Decimal("0.0421") and usage.run_id == run_id
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (1200, 640, 9000)
    assert (log_file.kind, log_file.path) == ("log", f"logs/run-{run_id}-claude.log")
    assert '"total_cost_usd": 0.0421' in (setup.workspace / log_file.path).read_text()

    # A later run of the same task reuses the checkout and its branch.
    second = await run(setup, task, run_id)
    assert f"on {branch}: 2 commits" in second.outcome
    assert len(remote_log(setup.remote, branch)) == 3  # initial + two runs


async def test_a_rate_limited_cli_hands_over_to_the_next_at_once(setup: Setup) -> None:
    task, run_id = await start(setup, "Fix the bug", "FAKE:limit-claude")
    result = await run(setup, task, run_id)
    assert result.status == "succeeded", result.outcome
    assert result.outcome.startswith("codex on ")
    # Until the reset time Claude printed (three hours away in the fake), not the default.
    until = setup.gateway.cooling_until(("cli:claude", "process"))
    assert until is not None and until > utcnow() + timedelta(hours=2)
    async with setup.db.session() as session:
        rows = (await session.execute(select(Usage).order_by(Usage.id))).scalars().all()
    # Codex's tokens are priced as its configured model (no cost in its output).
    [codex] = [r for r in rows if r.profile == "cli:codex"]
    assert (codex.input_tokens, codex.cache_read_tokens, codex.output_tokens) == (315, 24448, 122)
    assert codex.cost_usd > 0 and codex.price_known


async def test_every_cli_limited_defers_the_run(setup: Setup) -> None:
    task, run_id = await start(setup, "Fix it", "FAKE:limit-claude FAKE:limit-codex")
    result = await run(setup, task, run_id)
    assert result.status == "deferred", result.outcome
    assert result.retry_at is not None
    assert "claude hit a rate or usage limit; codex hit" in result.outcome
    # Both cooling down: the next run does not start either of them.
    task2, run2 = await start(setup, "Other")
    again = await run(setup, task2, run2)
    assert again.status == "deferred"
    assert "claude cooling down; codex cooling down" in again.outcome


async def test_no_commits_goes_to_review(setup: Setup) -> None:
    task, run_id = await start(setup, "Think only", "FAKE:nocommit")
    result = await run(setup, task, run_id)
    assert result.status == "succeeded"
    async with setup.db.session() as session:
        found = await tasks.get(session, task.id)
        notes = (
            await session.execute(select(TaskEvent.body).where(TaskEvent.to_status.is_not(None)))
        ).scalars()
    assert found is not None and found.status == TaskStatus.IN_REVIEW
    assert any(n and n.startswith("no commits") for n in notes)


async def test_a_commit_not_on_the_remote_goes_to_review(setup: Setup) -> None:
    task, run_id = await start(setup, "Local only", "FAKE:nopush")
    result = await run(setup, task, run_id)
    assert "1 commit" in result.outcome and "not pushed" in result.outcome
    async with setup.db.session() as session:
        found = await tasks.get(session, task.id)
    assert found is not None and found.status == TaskStatus.IN_REVIEW


async def test_a_missing_cli_is_named(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    task, run_id = await start(setup, "Anything")
    result = await run(setup, task, run_id)
    assert result.status == "failed"
    assert "claude: the program 'claude' is not on PATH" in result.outcome
    assert "codex: the program 'codex' is not on PATH" in result.outcome


def alive(pid: int) -> bool:
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return state.returncode == 0 and not state.stdout.strip().startswith("Z")


async def test_a_hanging_cli_is_killed_with_its_children_at_the_timeout(setup: Setup) -> None:
    task, run_id = await start(setup, "Hang", "FAKE:hang")
    result = await run(setup, task, run_id)
    assert result.status == "failed"
    assert "claude timed out after 3s; its processes were killed" in result.outcome
    pids = (setup.workspace / "checkouts" / str(task.id) / ".fake-pids").read_text().split()
    assert pids and not any(alive(int(pid)) for pid in pids)


async def test_stop_kills_the_cli_and_ends_the_run_cancelled(setup: Setup) -> None:
    task, run_id = await start(setup, "Hang", "FAKE:hang")
    running = asyncio.create_task(run(setup, task, run_id, timeout=timedelta(seconds=60)))
    pids_file = setup.workspace / "checkouts" / str(task.id) / ".fake-pids"
    while not pids_file.exists() or not process_adapter.is_running(run_id):
        await asyncio.sleep(0.05)
    assert process_adapter.stop(run_id, by="Ben")
    result = await running
    assert result.status == "cancelled"
    assert result.outcome.startswith("stopped by Ben; the checkout is kept.")
    async with setup.db.session() as session:
        stopped = await tasks.get(session, task.id)
    assert stopped is not None and stopped.status == TaskStatus.BLOCKED
    assert not any(alive(int(pid)) for pid in pids_file.read_text().split())
    assert (setup.workspace / "checkouts" / str(task.id) / ".git").exists()


def test_output_shapes_are_read() -> None:
    claude = coding_cli.parse(
        ["claude"],
        '{"type":"result","subtype":"error_during_execution","is_error":true,'
        '"result":"API Error: 429 rate_limit_error","total_cost_usd":0.01,"usage":{}}',
        1,
    )
    assert claude.is_error and claude.limited and claude.cost_usd == Decimal("0.01")
    codex = coding_cli.parse(
        ["/usr/local/bin/codex"],
        '{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":4,'
        '"output_tokens":2}}\n'
        '{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"ok"}}\n',
        0,
    )
    assert (codex.result, codex.input_tokens, codex.cache_read_tokens) == ("ok", 6, 4)
    assert not codex.is_error and codex.cost_usd is None
    other = coding_cli.parse(["aider"], "lots\nof\noutput\nToo Many Requests", 2)
    assert other.is_error and other.limited
    assert (
        git.branch_name(12, "Fix: the login/redirect bug!")
        == "fleet/12-fix-the-login-redirect-bug"
    )
    assert coding_cli.pr_url("opened https://github.com/o/r/pull/17 ok") == (
        "https://github.com/o/r/pull/17"
    )
