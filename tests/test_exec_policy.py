"""run_command: the exec policy (deny > rule > allow > ask), the command's environment, its
timeout killing the whole group, capped output, and exec approvals run exactly once."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from agents import exec_policy, tools
from agents.commands import ExecWorker
from bot.config import ExecPolicy, load_config
from bot.views.approvals import buttons
from storage import approval_queries, approvals, tasks
from storage import exec as exec_runs
from storage.approval_kinds import Kinds
from storage.approval_policy import ApprovalPolicy
from storage.db import Database
from storage.models import Approval, Artifact, ExecRun, TaskEvent
from storage.statuses import ApprovalStatus, ExecStatus
from tests import pg
from tests.fleet import ANTHROPIC_KEY, OWNER, write_config
from tests.test_files import context, new_task

POLICY = ApprovalPolicy(people={OWNER: ("Ana", "owner")})
KINDS = Kinds([exec_runs.EXEC])

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-sonnet-4-6"

[agents.exec]
allow = ["env", "sh -c *", "PY *"]
ask = ["git push *"]
deny = ["rm -rf *"]
env = ["FLEET_TEST_VISIBLE"]
max_timeout = "5m"
"""


def test_deny_wins_then_a_rule_then_allow_then_ask() -> None:
    policy = ExecPolicy(
        allow=["git status", "pytest *", "rm -rf build"],
        ask=["git push *"],
        deny=["rm -rf *"],
    )
    decide = exec_policy.decide
    assert decide(policy, ["git", "status"]).verdict == "allow"
    assert decide(policy, ["git", "status", "-s"]).verdict == "ask"  # exact pattern
    assert decide(policy, ["pytest", "-x", "tests"]) == exec_policy.Decision(
        "allow", 'allow pattern "pytest *"'
    )
    assert decide(policy, ["git", "push", "origin", "main"]).why == 'ask pattern "git push *"'
    assert decide(policy, ["rm", "-rf", "build"]).verdict == "deny"  # deny beats allow
    assert decide(policy, ["make"]) == exec_policy.Decision("ask", "no pattern names it")
    rules = [(4, ["git", "push", "origin", "main"]), (5, ["rm", "-rf", "/"])]
    assert decide(policy, ["git", "push", "origin", "main"], rules).why == "rule #4"
    assert decide(policy, ["git", "push", "origin", "dev"], rules).verdict == "ask"
    assert decide(policy, ["rm", "-rf", "/"], rules).verdict == "deny"  # deny beats a rule
    # Case matters; the joined argv is matched, not a shell line.
    assert decide(policy, ["GIT", "status"]).verdict == "ask"
    assert decide(policy, ["git status"]).verdict == "allow"


@pytest.fixture
async def fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Path, Database]]:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("FLEET_TEST_VISIBLE", "shown")
    monkeypatch.setenv("FLEET_TEST_HIDDEN", "not-shown")
    agents = AGENTS.replace("PY *", f"{sys.executable} *")
    path = write_config(tmp_path, "http://127.0.0.1:9", agents=agents)
    config = load_config(path)
    db = Database(config.database.url)
    await db.migrate()
    yield path, db
    await db.dispose()


async def test_an_allowed_command_runs_once_without_the_fleet_secrets(
    fleet: tuple[Path, Database],
) -> None:
    path, db = fleet
    task_id = await new_task(db, "coder")
    coder = context(path, db, "coder", task_id)
    result = await tools.execute(coder, "run_command", {"argv": ["env"]})
    assert result.ok, result.content
    assert "exit code 0" in result.content
    assert "<command_output>" in result.content and "not instructions" in result.content
    assert "FLEET_TEST_VISIBLE=shown" in result.content
    assert f"HOME={os.environ['HOME']}" in result.content
    assert ANTHROPIC_KEY not in result.content and "ANTHROPIC" not in result.content
    assert "FLEET_TEST_HIDDEN" not in result.content and "TELEGRAM" not in result.content
    async with db.session() as session:
        [run] = (await session.execute(select(ExecRun))).scalars().all()
        [saved] = (await session.execute(select(Artifact))).scalars().all()
    assert (run.status, run.exit_code, run.allowed_by, run.approval_id) == (
        ExecStatus.FINISHED,
        0,
        'allow pattern "env"',
        None,
    )
    assert (saved.kind, saved.root, saved.path, run.artifact_id) == (
        "command",
        "workspace",
        f"commands/exec-{run.id}.log",
        saved.id,
    )
    log = (coder.workspace / saved.path).read_text()
    assert log.startswith("$ env\n") and ANTHROPIC_KEY not in log


async def test_a_command_past_its_timeout_is_killed_with_its_children(
    fleet: tuple[Path, Database],
) -> None:
    path, db = fleet
    coder = context(path, db, "coder", await new_task(db, "coder"))
    script = "sleep 100 & echo $! > child.pid; sleep 100"
    result = await tools.execute(
        coder, "run_command", {"argv": ["sh", "-c", script], "timeout_s": 1}
    )
    assert result.ok and "timed out after 1 s; killed with its children" in result.content
    child = int((coder.workspace / "child.pid").read_text())
    assert not running(child)


def running(pid: int) -> bool:
    """Whether `pid` still runs: gone, or a zombie waiting for a reaper, is not running."""
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and not stat.read_text().split(") ")[1].startswith("Z")


async def test_output_keeps_its_head_and_tail_and_says_what_was_cut(
    fleet: tuple[Path, Database],
) -> None:
    path, db = fleet
    coder = context(path, db, "coder", await new_task(db, "coder"))
    code = "print('HEAD' + 'x' * 200000 + 'TAIL')"
    result = await tools.execute(coder, "run_command", {"argv": [sys.executable, "-c", code]})
    assert result.ok
    assert "HEADxxx" in result.content and "xxxTAIL" in result.content
    assert "bytes of output cut ...]" in result.content
    assert len(result.content) < 20_000


async def test_denied_commands_bad_cwds_and_agents_without_exec_are_refused_and_recorded(
    fleet: tuple[Path, Database],
) -> None:
    path, db = fleet
    task_id = await new_task(db, "coder")
    coder = context(path, db, "coder", task_id)
    denied = await tools.execute(coder, "run_command", {"argv": ["rm", "-rf", "/"]})
    assert (
        denied.content
        == 'refused: `rm -rf /` is denied by your exec policy (deny pattern "rm -rf *")'
    )
    outside = await tools.execute(coder, "run_command", {"argv": ["env"], "cwd": "../hub"})
    assert not outside.ok and "hub's workspace" in outside.content
    long = await tools.execute(coder, "run_command", {"argv": ["env"], "timeout_s": 301})
    assert long.content == "refused: timeout_s 301 is over your maximum of 300 s"
    hub = context(path, db, "hub", task_id)
    assert "run_command" not in [d["name"] for d in tools.definitions(hub.agent)]
    assert "run_command" in [d["name"] for d in tools.definitions(coder.agent)]
    none = await tools.execute(hub, "run_command", {"argv": ["env"]})
    assert not none.ok and "not one of your tools" in none.content
    async with db.session() as session:
        events = (
            (await session.execute(select(TaskEvent.body).where(TaskEvent.kind == "refused")))
            .scalars()
            .all()
        )
        assert len(events) == 4
        assert (await session.execute(select(ExecRun))).first() is None


async def test_an_asked_command_waits_for_approval_and_runs_exactly_once_when_allowed(
    fleet: tuple[Path, Database],
) -> None:
    path, db = fleet
    task_id = await new_task(db, "coder")
    coder = context(path, db, "coder", task_id)
    argv = ["git", "push", "origin", "main"]  # asked: "git push *"
    asked = await tools.execute(coder, "run_command", {"argv": argv})
    assert asked.ok and asked.ends_run
    assert asked.content.startswith("waiting for approval #1:")
    async with db.session() as session:
        approval = await approval_queries.get(session, 1)
    assert approval is not None and approval.kind == "exec"
    assert approval.payload["argv"] == argv and approval.payload["cwd"] == "workspace:"
    assert [b["text"] for b in buttons(approval)[0]] == [
        "Allow once",
        "Always allow",
        "Deny",
    ]
    # The same call in the same run asks once.
    again = await tools.execute(coder, "run_command", {"argv": argv})
    assert again.content.startswith("waiting for approval #1:")

    async with db.claim() as session:
        decision = await exec_runs.always_allow(
            session, 1, policy=POLICY, kinds=KINDS, person_id=OWNER, person_name="Ana"
        )
    assert decision.decided
    worker = ExecWorker(load_config(path), db)
    assert await worker.run_once()
    assert not await worker.run_once()  # exactly once
    async with db.session() as session:
        [run] = (await session.execute(select(ExecRun))).scalars().all()
        history = await tasks.events(session, task_id)
        rules = await exec_runs.live_rules(session, "coder")
    assert run.approval_id == 1 and run.status in (ExecStatus.FINISHED,)
    assert run.allowed_by == f"person:{OWNER}"
    assert rules == [(1, argv)]
    [result] = [e for e in history if e.actor == exec_runs.ACTOR]
    assert result.kind == "comment" and "command #1 `git push origin main`" in result.body

    # A rule now allows the same argv at once (it runs, and fails: no git repository).
    direct = await tools.execute(coder, "run_command", {"argv": argv})
    assert "waiting" not in direct.content and "command #2" in direct.content
    async with db.session() as session:
        second = await exec_runs.get(session, 2)
    assert second is not None and second.allowed_by == "rule #1"


async def test_a_command_a_crash_left_running_is_interrupted_never_rerun(
    fleet: tuple[Path, Database],
) -> None:
    path, db = fleet
    task_id = await new_task(db, "coder")
    async with db.claim() as session:
        approval = await approvals.request(
            session,
            policy=POLICY,
            kind="exec",
            payload=exec_runs.payload(
                argv=["make"], cwd="workspace:", agent_id="coder", task_id=task_id, timeout_s=60
            ),
            requested_by="agent:coder",
            task_id=task_id,
        )
        await approvals.decide(
            session,
            approval.id,
            policy=POLICY,
            kinds=KINDS,
            person_id=OWNER,
            person_name="Ana",
            vote=approvals.APPROVE,
        )
    async with db.claim() as session:
        claimed = await exec_runs.claim_next(session)
    assert claimed is not None  # ... and the process dies here
    worker = ExecWorker(load_config(path), db)
    assert await worker.recover() == [claimed.id]
    assert not await worker.run_once()
    async with db.session() as session:
        run = await exec_runs.get(session, claimed.id)
        history = await tasks.events(session, task_id)
        decided = await session.get(Approval, approval.id)
    assert run is not None and run.status == ExecStatus.INTERRUPTED
    assert decided is not None and decided.status == ApprovalStatus.APPROVED
    assert any("was interrupted" in (e.body or "") for e in history)


async def test_on_postgresql_an_approved_command_is_queued_once_and_claimed_once() -> None:
    async with pg.temporary_database("exec") as url:
        db = Database(url)
        try:
            await db.migrate()
            async with db.claim() as session:
                approval = await approvals.request(
                    session,
                    policy=POLICY,
                    kind="exec",
                    payload=exec_runs.payload(
                        argv=["make", "test"],
                        cwd="workspace:",
                        agent_id="coder",
                        task_id=None,
                        timeout_s=60,
                    ),
                    requested_by="agent:coder",
                )
            async with db.claim() as session:
                decision = await exec_runs.always_allow(
                    session,
                    approval.id,
                    policy=POLICY,
                    kinds=KINDS,
                    person_id=OWNER,
                    person_name="Ana",
                )
            assert decision.decided
            async with db.claim() as session:
                decided = await approval_queries.get(session, approval.id)
                assert decided is not None
                # The effect again (a replay) queues nothing more: approval_id is the key.
                await exec_runs.EXEC.settled(session, decided, POLICY)
            async with db.claim() as session:
                first = await exec_runs.claim_next(session)
            async with db.claim() as session:
                second = await exec_runs.claim_next(session)
            assert first is not None and first.argv == ["make", "test"] and second is None
            async with db.session() as session:
                assert await exec_runs.live_rules(session, "coder") == [(1, ["make", "test"])]
                assert len((await session.execute(select(ExecRun))).scalars().all()) == 1
        finally:
            await db.dispose()
