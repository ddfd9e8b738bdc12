"""Approvals and deploys in storage/ and integrations/, on a real SQLite database: deciding
exactly once, committees, timeouts, and deploys that run real processes and verify against a
local HTTP server (rolling back when it says no)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from agents import tools
from agents.org import OrgChart
from agents.tools_base import ToolContext
from bot.app import approval_kinds
from bot.config import Config, ConfigError, load_config
from bot.views.approvals import ApprovalCb
from integrations.deploy import DeployWorker, run_command, shown_command, target_of
from storage import agents as agent_state
from storage import (
    approval_queries,
    approvals,
    budget_requests,
    deploys,
    incident_gates,
    incidents,
    outbox,
    tasks,
    usage,
)
from storage.approval_kinds import Kinds
from storage.approval_policy import ApprovalPolicy
from storage.approval_sweep import sweep
from storage.db import Database
from storage.models import (
    AgentState,
    Approval,
    DeployRun,
    InboxMessage,
    Incident,
    Outbox,
    Run,
    TaskEvent,
    utcnow,
)
from storage.statuses import ApprovalStatus, DeployStatus
from tests import pg
from tests.fleet import OPERATOR, OWNER, TOKEN, VIEWER, request_action, write_config

SECOND_OWNER = 1004

DEPLOY_SCRIPT = """
import os, sys
from pathlib import Path
state = Path(sys.argv[1])
print("deploying", os.environ.get("FLEET_DEPLOY_REF", ""))
print("token in the environment:", os.environ.get("TELEGRAM_BOT_TOKEN", "none"))
for i in range(30):
    print("line", i)
state.write_text(sys.argv[2])
with open(sys.argv[3], "a") as runs:
    runs.write(sys.argv[2] + "\\n")
"""

# The deploy waits for a release file the test writes, so the test can act while a deploy is
# in progress without guessing how long anything takes.
GATED_SCRIPT = """
import sys, time
from pathlib import Path
state, writes, runs, gate = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
print("deploying", writes, flush=True)
for _ in range(1200):
    if gate.exists():
        break
    time.sleep(0.05)
state.write_text(writes)
with runs.open("a") as log:
    log.write(writes + "\\n")
print("done", flush=True)
"""


class Site:
    """A local HTTP server whose /health answers from a state file the deploy scripts write:
    503 when it says "broken", else 200 with the state as the body."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.hits = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def health(self, _request: web.Request) -> web.Response:
        self.hits += 1
        text = self.state.read_text() if self.state.exists() else "v1"
        return web.Response(status=503 if text == "broken" else 200, text=f"site {text}")

    async def __aenter__(self) -> Site:
        app = web.Application()
        app.router.add_get("/health", self.health)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/health"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@dataclass
class Env:
    config: Config
    db: Database
    tmp: Path
    site: Site

    @property
    def policy(self) -> ApprovalPolicy:
        return ApprovalPolicy.from_config(self.config)

    @property
    def kinds(self) -> Kinds:
        return approval_kinds(self.config)

    def runs_log(self) -> list[str]:
        path = self.tmp / "runs.log"
        return path.read_text().split() if path.exists() else []


def deploy_table(site: Site, tmp: Path, *, writes: str, rollback: bool = True) -> str:
    script = tmp / "deploy_script.py"
    script.write_text(DEPLOY_SCRIPT, encoding="utf-8")
    state, runs = tmp / "state", tmp / "runs.log"
    lines = [
        "[[deploys]]",
        'id = "site"',
        f'command = "{sys.executable} {script} {state} {writes} {runs}"',
        f'verify = ["{site.url}"]',
        'verify_text = "site"',
        'verify_timeout = "5s"',
        "verify_attempts = 2",
        'verify_interval = "1s"',
        'timeout = "60s"',
    ]
    if rollback:
        lines.append(f'rollback = "{sys.executable} {script} {state} v1 {runs}"')
    return "\n".join(lines) + "\n"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with Site(tmp_path / "state") as server:
        yield server


async def load_env(path: Path, site: Site) -> Env:
    """The fleet configured at `path`, with its database migrated."""
    config = load_config(path)
    db = Database(config.database.url)
    await db.migrate()
    return Env(config, db, path.parent, site)


class OpenEnv(Protocol):
    async def __call__(self, extra: str = "", database_url: str | None = None) -> Env: ...


@pytest.fixture
async def open_env(
    tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OpenEnv]:
    """Opens the fleet (three people and a second owner, Dee, plus the `extra` tables) on
    tmp_path; every database it opened is disposed of when the test ends."""
    opened: list[Database] = []

    async def open_(extra: str = "", database_url: str | None = None) -> Env:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-unused")
        people = f'[[people]]\ntelegram_id = {SECOND_OWNER}\nname = "Dee"\nrole = "owner"\n'
        path = write_config(
            tmp_path, "http://127.0.0.1:9", extra=people + extra, database_url=database_url
        )
        environment = await load_env(path, site)
        opened.append(environment.db)
        return environment

    yield open_
    for db in opened:
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(
    request: pytest.FixtureRequest, tmp_path: Path, site: Site, open_env: OpenEnv
) -> AsyncIterator[Env]:
    """The deploy target `site` (writes "v2", rolls back to "v1"), on each backend."""
    table = deploy_table(site, tmp_path, writes="v2")
    if request.param == "sqlite":
        yield await open_env(table)
        return
    async with pg.temporary_database("approvals") as url:
        environment = await open_env(table, url)
        yield environment
        # Before the database is dropped: open_env's own teardown comes too late for that.
        await environment.db.dispose()


async def new_task(db: Database) -> int:
    async with db.claim() as session:
        task = await tasks.create(
            session, title="Ship it", assignee="coder", creator="agent:hub", max_retries=3
        )
        return task.id


async def request_deploy(env: Env, task_id: int | None = None, **kw: object) -> int:
    async with env.db.claim() as session:
        approval = await approvals.request(
            session,
            policy=env.policy,
            kind="deploy",
            payload=deploys.payload("site", "abc123", "./deploy", "release"),
            requested_by="agent:coder",
            task_id=task_id,
            **kw,  # type: ignore[arg-type]
        )
        return approval.id


async def vote(
    env: Env, approval_id: int, person: int, name: str, how: str = "approve", **kw: object
) -> approvals.Decision:
    async with env.db.claim() as session:
        return await approvals.decide(
            session,
            approval_id,
            policy=env.policy,
            kinds=env.kinds,
            person_id=person,
            person_name=name,
            vote=how,
            **kw,  # type: ignore[arg-type]
        )


async def rows(db: Database, model: Any, *where: Any) -> list[Any]:
    async with db.session() as session:
        found = await session.execute(select(model).where(*where).order_by(model.id))
        return list(found.scalars())


async def trail(db: Database, approval_id: int) -> list[tuple[str, str, str]]:
    async with db.session() as session:
        return [
            (e.kind, e.actor, e.body) for e in await approval_queries.events(session, approval_id)
        ]


async def test_an_owner_approval_runs_the_deploy_once_and_verifies_it(env: Env) -> None:
    task_id = await new_task(env.db)
    approval_id = await request_deploy(env, task_id)
    [posted] = await rows(env.db, Outbox, Outbox.dedup_key == f"approval:{approval_id}")
    assert posted.feed == "approvals" and posted.buttons is not None
    assert [b["text"] for b in posted.buttons[0]] == ["Approve", "Reject", "Details"]
    assert f"Approval #{approval_id}" in posted.text and "deploy site at abc123" in posted.text
    assert "Command: <code>./deploy</code>" in posted.text and "coder" in posted.text

    # Operators and viewers cannot approve a deploy; nothing changes.
    refused = await vote(env, approval_id, OPERATOR, "Ben")
    assert not refused.won and refused.refusal == "deploys need an owner"
    refused = await vote(env, approval_id, VIEWER, "Cy")
    assert not refused.won and refused.refusal == "viewers cannot decide approvals"
    assert await rows(env.db, DeployRun) == []

    decided = await vote(env, approval_id, OWNER, "Ana")
    assert decided.won and decided.status == ApprovalStatus.APPROVED
    again = await vote(env, approval_id, SECOND_OWNER, "Dee")
    assert not again.won
    assert again.refusal.startswith("already approved by Ana at ")
    [run] = await rows(env.db, DeployRun)
    assert (run.target, run.ref, run.status, run.approval_id) == (
        "site",
        "abc123",
        "pending",
        approval_id,
    )
    # The message is edited: the outcome shown, the buttons gone.
    [edit] = await rows(env.db, Outbox, Outbox.edit_of == f"approval:{approval_id}")
    assert edit.buttons is None and "✅ Approved by Ana at " in edit.text

    worker = DeployWorker(env.config, env.db)
    assert await worker.run_once()
    assert not await worker.run_once()  # exactly one run per approval
    [run] = await rows(env.db, DeployRun)
    assert run.status == DeployStatus.SUCCEEDED
    assert [(s["name"], s["ok"]) for s in run.steps] == [("command", True), ("verify", True)]
    assert env.runs_log() == ["v2"]
    assert env.site.hits == 1
    assert "line 29" in run.output_tail and len(run.output_tail.splitlines()) == 20
    assert TOKEN not in run.output_tail
    [report] = await rows(env.db, Outbox, Outbox.reply_to == f"approval:{approval_id}")
    assert "Deploy run #1</b> of site at abc123: ✅ verified" in report.text
    assert TOKEN not in report.text
    async with env.db.session() as session:
        comments = [e.body for e in await tasks.events(session, task_id) if e.kind == "comment"]
    assert any("approved by Ana" in c for c in comments)
    assert any(c.startswith("Deploy run #1 of site at abc123: ✅ verified") for c in comments)

    assert await trail(env.db, approval_id) == [
        ("request", "agent:coder", "deploy site at abc123"),
        ("vote", f"person:{OWNER}", "approve"),
        ("decision", f"person:{OWNER}", "approved"),
        ("deploy", "system:deploy", "run #1 started"),
        ("deploy", "system:deploy", "run #1 succeeded"),
    ]


async def test_a_failed_verification_rolls_back_and_verifies_again(
    tmp_path: Path, site: Site, open_env: OpenEnv
) -> None:
    env = await open_env(deploy_table(site, tmp_path, writes="broken"))
    approval_id = await request_deploy(env)
    assert (await vote(env, approval_id, OWNER, "Ana")).won
    assert await DeployWorker(env.config, env.db).run_once()
    [run] = await rows(env.db, DeployRun)
    assert run.status == DeployStatus.ROLLED_BACK
    assert [(s["name"], s["ok"]) for s in run.steps] == [
        ("command", True),
        ("verify", False),
        ("rollback", True),
        ("verify-after-rollback", True),
    ]
    assert "status 503, expected 200 (after 2 attempt(s))" in run.steps[1]["detail"]
    assert env.runs_log() == ["broken", "v1"]
    assert site.hits == 3  # two failed attempts, then one good one after the rollback
    [report] = await rows(env.db, Outbox, Outbox.reply_to == f"approval:{approval_id}")
    assert "failed, rolled back and verified" in report.text
    assert "❌ verify" in report.text and "✅ rollback" in report.text
    assert [k for k, _, _ in await trail(env.db, approval_id)] == [
        "request",
        "vote",
        "decision",
        "deploy",
        "deploy",
    ]
    assert (await trail(env.db, approval_id))[-1][2] == "run #1 rolled_back"


async def test_without_a_rollback_a_failed_deploy_is_failed(
    tmp_path: Path, site: Site, open_env: OpenEnv
) -> None:
    env = await open_env(deploy_table(site, tmp_path, writes="broken", rollback=False))
    approval_id = await request_deploy(env)
    assert (await vote(env, approval_id, OWNER, "Ana")).won
    assert await DeployWorker(env.config, env.db).run_once()
    [run] = await rows(env.db, DeployRun)
    assert run.status == DeployStatus.FAILED
    assert [s["name"] for s in run.steps] == ["command", "verify"]


async def test_a_deploy_found_running_at_start_is_interrupted_and_not_rerun(env: Env) -> None:
    approval_id = await request_deploy(env)
    assert (await vote(env, approval_id, OWNER, "Ana")).won
    async with env.db.claim() as session:
        run = await deploys.claim_next(session)  # started, then the process "died"
    assert run is not None
    worker = DeployWorker(env.config, env.db)
    assert await worker.recover() == [run.id]
    assert not await worker.run_once()
    [run] = await rows(env.db, DeployRun)
    assert run.status == DeployStatus.INTERRUPTED
    assert env.runs_log() == []
    [report] = await rows(env.db, Outbox, Outbox.reply_to == f"approval:{approval_id}")
    assert "was interrupted" in report.text and "not re-run" in report.text


async def test_concurrent_presses_make_one_decision(env: Env) -> None:
    approval_id = await request_deploy(env)
    results = await asyncio.gather(
        vote(env, approval_id, OWNER, "Ana"),
        vote(env, approval_id, SECOND_OWNER, "Dee"),
        vote(env, approval_id, OWNER, "Ana"),
    )
    assert sum(r.won for r in results) == 1
    assert len(await rows(env.db, DeployRun)) == 1
    kinds = [k for k, _, _ in await trail(env.db, approval_id)]
    assert kinds.count("decision") == 1 and kinds.count("vote") == 1


async def test_a_committee_voting_at_the_same_instant_decides_once(env: Env) -> None:
    async with env.db.claim() as session:
        approval = await request_action(session, env.policy, "Pay the invoice", required=2)
    results = await asyncio.gather(
        vote(env, approval.id, OPERATOR, "Ben"),
        vote(env, approval.id, OWNER, "Ana"),
        vote(env, approval.id, SECOND_OWNER, "Dee"),
    )
    # Both of the first two count; the third finds it decided.
    assert sorted(r.status for r in results if r.won) == [
        ApprovalStatus.APPROVED,
        ApprovalStatus.PENDING,
    ]
    assert sum(not r.won for r in results) == 1
    kinds = [k for k, _, _ in await trail(env.db, approval.id)]
    assert kinds.count("decision") == 1 and kinds.count("vote") == 2


async def test_a_committee_needs_two_different_people(env: Env) -> None:
    task_id = await new_task(env.db)
    async with env.db.claim() as session:
        approval = await request_action(
            session, env.policy, "Email all customers", task_id=task_id, required=2
        )
    first = await vote(env, approval.id, OPERATOR, "Ben")
    assert first.won and first.status == ApprovalStatus.PENDING and first.votes == 1
    twice = await vote(env, approval.id, OPERATOR, "Ben")
    assert not twice.won and twice.refusal.startswith("you already voted approve at ")
    [partial] = await rows(env.db, Outbox, Outbox.edit_of == f"approval:{approval.id}")
    assert "Approved so far (1 of 2): Ben" in partial.text and partial.buttons is not None
    second = await vote(env, approval.id, OWNER, "Ana")
    assert second.won and second.status == ApprovalStatus.APPROVED and second.votes == 2
    async with env.db.session() as session:
        comments = [e for e in await tasks.events(session, task_id) if e.kind == "comment"]
    [comment] = comments
    assert comment.body.startswith(f"Approval #{approval.id} (action: Email all customers)")
    assert "approved by Ana" in comment.body


async def test_a_rejection_records_the_reason_and_wakes_the_agent(env: Env) -> None:
    task_id = await new_task(env.db)
    async with env.db.claim() as session:
        await session.execute(delete(Run))  # the assignment's wake, consumed
        approval = await request_action(
            session, env.policy, "Post the launch note", kind="publish", task_id=task_id
        )
    decided = await vote(env, approval.id, OPERATOR, "Ben", "reject", reason="Not before Monday")
    assert decided.won and decided.status == ApprovalStatus.REJECTED
    async with env.db.session() as session:
        [comment] = [e for e in await tasks.events(session, task_id) if e.kind == "comment"]
        woken = (await session.execute(select(Run).where(Run.agent_id == "coder"))).scalars()
        assert [r.task_id for r in woken] == [task_id]
    assert "rejected by Ben at " in comment.body and comment.body.endswith(": Not before Monday")
    [edit] = await rows(env.db, Outbox, Outbox.edit_of == f"approval:{approval.id}")
    assert "❌ Rejected by Ben" in edit.text and edit.buttons is None


async def test_unknown_ids_and_expired_approvals_are_refused(env: Env) -> None:
    missing = await vote(env, 999_999, OWNER, "Ana")
    assert not missing.won and missing.approval is None
    assert missing.refusal == "there is no approval #999999"
    for beyond in (2**31, 2**70, 0, -1):  # not a row id on either backend: no query fails
        assert (await vote(env, beyond, OWNER, "Ana")).refusal == f"there is no approval #{beyond}"
    approval_id = await request_deploy(env, deadline=utcnow() - timedelta(seconds=1))
    late = await vote(env, approval_id, OWNER, "Ana")
    assert not late.won and late.refusal.startswith(f"approval #{approval_id} expired at ")
    assert await rows(env.db, DeployRun) == []
    with pytest.raises(ValueError):
        ApprovalCb.unpack("ap:y:not-a-number")


async def test_timeout_reminds_at_half_time_then_escalates_then_expires(env: Env) -> None:
    task_id = await new_task(env.db)
    async with env.db.claim() as session:
        approval = await request_action(
            session, env.policy, "Rotate the keys", task_id=task_id, on_timeout="escalate"
        )
    start = approval.created_at
    async with env.db.claim() as session:
        assert await sweep(session, env.policy, env.kinds, start + timedelta(minutes=30)) == []
    async with env.db.claim() as session:
        assert await sweep(
            session, env.policy, env.kinds, start + timedelta(hours=1, minutes=1)
        ) == [f"reminded #{approval.id}"]
    async with env.db.claim() as session:  # a reminder is sent once
        assert (
            await sweep(session, env.policy, env.kinds, start + timedelta(hours=1, minutes=2))
            == []
        )
    [reminder] = await rows(
        env.db, Outbox, Outbox.dedup_key.like(f"approval:{approval.id}:remind:%")
    )
    assert reminder.reply_to == f"approval:{approval.id}" and "still waits" in reminder.text

    escalated_at = start + timedelta(hours=2, minutes=1)
    async with env.db.claim() as session:
        assert await sweep(session, env.policy, env.kinds, escalated_at) == [
            f"escalated #{approval.id}"
        ]
    async with env.db.session() as session:
        row = await approval_queries.get(session, approval.id)
        assert row is not None and row.status == ApprovalStatus.PENDING
        assert row.approvers == {"role": "owner"}
        assert row.deadline is not None  # a fresh window as long as the first one
        assert abs(row.deadline - (escalated_at + timedelta(hours=2))) < timedelta(seconds=1)
        comments = [e.body for e in await tasks.events(session, task_id) if e.kind == "comment"]
    assert any("escalated to the owners" in c for c in comments)
    refused = await vote(env, approval.id, OPERATOR, "Ben", now=escalated_at)
    assert refused.refusal == f"action approval #{approval.id} needs an owner"

    async with env.db.claim() as session:  # the second window has its own reminder
        done = await sweep(
            session, env.policy, env.kinds, escalated_at + timedelta(hours=1, minutes=1)
        )
        assert done == [f"reminded #{approval.id}"]
    expired_at = escalated_at + timedelta(hours=2, minutes=1)
    async with env.db.claim() as session:
        assert await sweep(session, env.policy, env.kinds, expired_at) == [
            f"expired #{approval.id}"
        ]
    async with env.db.session() as session:
        row = await approval_queries.get(session, approval.id)
        assert row is not None and row.status == ApprovalStatus.EXPIRED
        comments = [e.body for e in await tasks.events(session, task_id) if e.kind == "comment"]
    assert "expired at" in comments[-1] and "with no decision" in comments[-1]
    late = await vote(env, approval.id, OWNER, "Ana", now=expired_at)
    assert not late.won and late.refusal.startswith(f"approval #{approval.id} expired at ")
    assert [k for k, _, _ in await trail(env.db, approval.id)] == [
        "request",
        "reminder",
        "escalation",
        "reminder",
        "expiry",
    ]


async def test_expire_policy_expires_at_the_deadline_and_tells_the_task(env: Env) -> None:
    task_id = await new_task(env.db)
    approval_id = await request_deploy(
        env, task_id, deadline=utcnow() + timedelta(minutes=10), on_timeout="expire"
    )
    async with env.db.claim() as session:
        done = await sweep(session, env.policy, env.kinds, utcnow() + timedelta(minutes=11))
    assert done == [f"expired #{approval_id}"]
    assert await rows(env.db, DeployRun) == []
    events = await rows(
        env.db, TaskEvent, TaskEvent.task_id == task_id, TaskEvent.kind == "comment"
    )
    assert "expired at" in events[-1].body
    [edit] = await rows(env.db, Outbox, Outbox.edit_of == f"approval:{approval_id}")
    assert "⌛ Expired at" in edit.text and edit.buttons is None
    async with env.db.session() as session:
        row = await session.get(Approval, approval_id)
        assert row is not None and row.decided_by == approvals.SYSTEM


def tool_context(env: Env, agent_id: str, task_id: int | None) -> ToolContext:
    agent = next(a for a in env.config.agents if a.id == agent_id)
    return ToolContext(
        config=env.config,
        org=OrgChart(env.config),
        db=env.db,
        agent=agent,
        run_id=7,
        task_id=task_id,
        workspace=env.tmp,
        today=utcnow().date(),
        now=utcnow(),
    )


async def test_agents_request_deploys_only_with_the_authority(env: Env) -> None:
    task_id = await new_task(env.db)
    hub = tool_context(env, "hub", task_id)  # authority: assign, comment, subtask
    assert "request_deploy" not in [d["name"] for d in tools.definitions(hub.agent)]
    args = {"target": "site", "reason": "release 2"}
    refused = await tools.execute(hub, "request_deploy", args)
    assert not refused.ok and "needs the request_deploy authority" in refused.content
    assert await rows(env.db, Approval) == []

    coder = tool_context(env, "coder", task_id)  # authority: comment, request_deploy
    unknown = await tools.execute(coder, "request_deploy", {"target": "moon", "reason": "x"})
    assert unknown.content == 'refused: unknown deploy target "moon" (known: site)'
    hostile = await tools.execute(
        coder, "request_deploy", {"target": "site", "ref": "v1; rm -rf /", "reason": "x"}
    )
    assert not hostile.ok and "ref must be a commit" in hostile.content
    via_approval = await tools.execute(
        coder, "request_approval", {"kind": "deploy", "summary": "ship"}
    )
    assert not via_approval.ok
    done = await tools.execute(coder, "request_deploy", {**args, "ref": "v2.0.1"})
    assert done.ok and done.content.startswith("deploy approval #1 requested")
    again = await tools.execute(coder, "request_deploy", {**args, "ref": "v2.0.1"})
    assert again.ok  # the same run asking twice: still one approval
    [approval] = await rows(env.db, Approval)
    assert (approval.kind, approval.task_id, approval.requested_by) == (
        "deploy",
        task_id,
        "agent:coder",
    )
    assert approval.payload["command"].endswith("v2 " + str(env.tmp / "runs.log"))
    [posted] = await rows(env.db, Outbox, Outbox.dedup_key == f"approval:{approval.id}")
    assert "deploy site at v2.0.1" in posted.text and "release 2" in posted.text


def test_deploy_approvers_must_be_owners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-unused")
    table = '[[deploys]]\nid = "a"\ncommand = "true"\napprovers = ["Ana", "Ben"]\n'
    table += '[[deploys]]\nid = "b"\ncommand = "true"\napprovers = "operator"\n'
    table += '[approvals]\non_timeout = "never"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, "http://127.0.0.1:9", extra=table))
    problems = [p.split(": ", 1)[1] for p in info.value.problems]
    assert problems == [
        'deploys.b.approvers: must be "owner" or a list of owners\' names (deploys need an owner)',
        'approvals.on_timeout: must be "escalate" or "expire"',
        'deploys.a.approvers[1]: "Ben" is not an owner in [[people]] (deploys need an owner)',
    ]
    ok = '[[deploys]]\nid = "a"\ncommand = "true"\napprovers = ["Ana", "Ben"]\n'
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, "http://127.0.0.1:9", extra=ok))
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        'deploys.a.approvers[1]: "Ben" is not an owner in [[people]] (deploys need an owner)'
    ]


async def test_private_copies_go_to_each_approver_and_are_edited_too(
    tmp_path: Path, site: Site, open_env: OpenEnv
) -> None:
    extra = deploy_table(site, tmp_path, writes="v2") + "[approvals]\nnotify_private = true\n"
    env = await open_env(extra)
    approval_id = await request_deploy(env)
    copies = await rows(env.db, Outbox, Outbox.dedup_key.like(f"approval:{approval_id}:dm:%"))
    assert sorted(c.chat_id for c in copies) == [OWNER, SECOND_OWNER]  # owners only
    assert all(c.buttons is not None for c in copies)
    assert (await vote(env, approval_id, SECOND_OWNER, "Dee")).won
    edits = await rows(env.db, Outbox, Outbox.edit_of.is_not(None))
    assert sorted((e.chat_id, e.edit_of) for e in edits) == sorted(
        [
            (-100500, f"approval:{approval_id}"),
            (OWNER, f"approval:{approval_id}:dm:{OWNER}"),
            (SECOND_OWNER, f"approval:{approval_id}:dm:{SECOND_OWNER}"),
        ]
    )
    assert all("Approved by Dee" in e.text and e.buttons is None for e in edits)


async def budget_request(session: AsyncSession) -> tuple[Approval, bool]:
    """coder paused by its budget, and the request to raise it by $10, as the gateway asks."""
    await agent_state.pause(session, "coder", by=usage.BUDGET_ACTOR, reason="budget")
    return await usage.request_raise(
        session,
        "coder",
        month=utcnow().date(),
        budget=Decimal(0),
        spent=Decimal(0),
        step=Decimal(10),
    )


async def test_a_budget_approval_decided_by_command_raises_the_budget(env: Env) -> None:
    async with env.db.claim() as session:
        approval, new = await budget_request(session)
    assert new
    # A budget stop is its own message (in alerts): nothing is posted to the approvals feed.
    assert await rows(env.db, Outbox) == []
    refused = await vote(env, approval.id, OPERATOR, "Ben")
    assert refused.refusal == f"budget approval #{approval.id} needs an owner"
    decided = await vote(env, approval.id, OWNER, "Ana")
    assert decided.won and isinstance(decided.effect, budget_requests.BudgetChange)
    assert decided.effect.budget == Decimal(10) and decided.effect.resumed
    async with env.db.session() as session:
        state = await session.get(AgentState, "coder")
        assert state is not None and not state.paused
    wrong = await vote(env, approval.id, OWNER, "Ana", kind="deploy")
    assert (
        wrong.approval is None and wrong.refusal == f"there is no deploy approval #{approval.id}"
    )


async def budget_stop(env: Env) -> Approval:
    """A budget request with its stop posted to `alerts`, as the gateway posts it."""
    async with env.db.claim() as session:
        approval, _ = await budget_request(session)
        button = {"text": "Raise budget by $10.00", "callback_data": f"bud:{approval.id}"}
        await outbox.enqueue(
            session,
            outbox.Destination(-100500, 7, "alerts"),
            "🛑 <b>coder</b> used up its monthly budget.",
            buttons=[[button]],
            dedup_key=f"budget-stop:{approval.id}",
        )
    return approval


async def test_a_budget_stop_settled_by_command_loses_its_button_and_says_how(env: Env) -> None:
    raised = await budget_stop(env)
    assert (await vote(env, raised.id, OWNER, "Ana")).won
    refused = await budget_stop(env)
    assert (await vote(env, refused.id, OWNER, "Ana", "reject", reason="not this month")).won
    edits = await rows(env.db, Outbox, Outbox.edit_of.is_not(None))
    assert [(e.edit_of, e.chat_id, e.topic, e.buttons) for e in edits] == [
        (f"budget-stop:{raised.id}", -100500, 7, None),
        (f"budget-stop:{refused.id}", -100500, 7, None),
    ]
    assert edits[0].text.startswith("🛑 <b>coder</b> used up its monthly budget.\n\n")
    assert "✅ Raised to $10.00 by Ana at " in edits[0].text
    assert edits[0].text.endswith("; coder resumed.")
    assert "❌ Rejected by Ana at " in edits[1].text
    assert edits[1].text.endswith(": not this month.")


async def test_an_agent_that_asked_outside_a_task_hears_the_outcome_in_its_inbox(env: Env) -> None:
    async with env.db.claim() as session:
        approval = await request_action(session, env.policy, "Renew the domain")
    decided = await vote(env, approval.id, OPERATOR, "Ben", "reject", reason="Already renewed")
    assert decided.won
    [message] = await rows(env.db, InboxMessage)
    assert message.agent_id == "coder" and message.source == f"person:{OPERATOR}"
    assert "(action: Renew the domain) rejected by Ben at " in message.body
    assert message.body.endswith(": Already renewed")
    [run] = await rows(env.db, Run)
    assert run.agent_id == "coder" and run.status == "queued"


async def test_an_approval_already_with_the_owners_expires_instead_of_escalating(env: Env) -> None:
    approval_id = await request_deploy(
        env, deadline=utcnow() + timedelta(minutes=10), on_timeout="escalate"
    )
    async with env.db.claim() as session:
        done = await sweep(session, env.policy, env.kinds, utcnow() + timedelta(minutes=11))
    assert done == [f"expired #{approval_id}"]


async def wait_until(db: Database, sql: str, expected: list[Any], timeout: float = 30) -> None:
    """Wait until the query returns `expected` (the worker writes as its processes finish)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with db.session() as session:
            found = [tuple(row) for row in await session.execute(text(sql))]
        if found == expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{sql} gave {found}, expected {expected}")
        await asyncio.sleep(0.05)


async def test_targets_deploy_side_by_side_and_each_one_at_a_time(
    tmp_path: Path, open_env: OpenEnv
) -> None:
    script = tmp_path / "gated.py"
    script.write_text(GATED_SCRIPT, encoding="utf-8")
    tables = ""
    for target in ("site", "docs"):
        args = f"{tmp_path / 'state'} {target} {tmp_path / 'runs.log'} {tmp_path / 'release'}"
        tables += f'[[deploys]]\nid = "{target}"\ncommand = "{sys.executable} {script} {args}"\n'
    env = await open_env(tables)
    stop = asyncio.Event()
    worker = DeployWorker(env.config, env.db)
    running = asyncio.create_task(worker.run(stop))
    try:
        for target in ("site", "site", "docs"):
            async with env.db.claim() as session:
                approval = await approvals.request(
                    session,
                    policy=env.policy,
                    kind="deploy",
                    payload=deploys.payload(target, None, "gated"),
                    requested_by=f"person:{OWNER}",
                )
            assert (await vote(env, approval.id, OWNER, "Ana")).won
        sql = "SELECT target, status FROM deploy_runs ORDER BY id"
        await wait_until(
            env.db, sql, [("site", "running"), ("site", "pending"), ("docs", "running")]
        )
        (tmp_path / "release").write_text("go")
        done = [("site", "succeeded"), ("site", "succeeded"), ("docs", "succeeded")]
        await wait_until(env.db, sql, done)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_a_p0_approval_is_decided_by_an_owner_and_pages_through_the_incident_effect(
    env: Env,
) -> None:
    async with env.db.claim() as session:
        incident, _ = await incidents.open_incident(
            session, fingerprint="db-down", severity="P2", title="Database down", source="x"
        )
        page = incident_gates.Page(None, [(OWNER, "Ana"), (OPERATOR, "Ben")])
        approval = await incident_gates.request_p0(
            session, incident.id, policy=env.policy, actor="agent:hub", page=page
        )
    assert approval is not None
    [posted] = await rows(env.db, Outbox, Outbox.dedup_key == f"approval:{approval.id}")
    assert "Page everyone for P0 incident" in posted.text and posted.buttons is not None
    refused = await vote(env, approval.id, OPERATOR, "Ben")
    assert refused.refusal == "P0 incidents need an owner"
    assert (await vote(env, approval.id, OWNER, "Ana")).won
    [paged] = await rows(env.db, Incident)
    assert paged.severity == "P0"
    pages = await rows(env.db, Outbox, Outbox.dedup_key.like("incident-page:%"))
    assert sorted(p.chat_id for p in pages) == [OWNER, OPERATOR]


# -- regressions: escalation and deadlines -----------------------------------------------------


async def test_escalated_committee_does_not_count_operator_votes_toward_the_owners(
    open_env: OpenEnv,
) -> None:
    env = await open_env()
    async with env.db.claim() as session:
        a = await request_action(
            session, env.policy, "Rotate the keys", on_timeout="escalate", required=2
        )
    first = await vote(env, a.id, OPERATOR, "Ben")
    assert first.won and first.status == ApprovalStatus.PENDING
    later = a.created_at + timedelta(hours=2, minutes=1)
    async with env.db.claim() as session:
        assert await sweep(session, env.policy, env.kinds, later) == [f"escalated #{a.id}"]
    one_owner = await vote(env, a.id, OWNER, "Ana", now=later)
    assert one_owner.won and one_owner.status == ApprovalStatus.PENDING
    assert one_owner.votes == 1
    two_owners = await vote(env, a.id, SECOND_OWNER, "Dee", now=later)
    async with env.db.session() as session:
        trail = await approval_queries.events(session, a.id)
    assert two_owners.status == ApprovalStatus.APPROVED
    assert any("no longer count" in e.body for e in trail if e.kind == "vote")


async def test_press_after_deadline_before_the_sweep_escalating_is_judged_as_escalated(
    open_env: OpenEnv,
) -> None:
    env = await open_env()
    ben = {"people": ["Ben"]}
    async with env.db.claim() as session:
        a = await request_action(
            session, env.policy, "Rotate the keys", approvers=ben, on_timeout="escalate"
        )
        b = await request_action(
            session, env.policy, "Rotate the other keys", approvers=ben, on_timeout="expire"
        )
    after = a.created_at + timedelta(hours=2, seconds=5)  # before the next sweep
    too_late = await vote(env, a.id, OPERATOR, "Ben", now=after)
    pressed = await vote(env, a.id, OWNER, "Ana", now=after)
    expired = await vote(env, b.id, OWNER, "Ana", now=after)
    # Past the deadline the approval belongs to the owners it escalates to.
    assert not too_late.won and "needs an owner" in too_late.refusal
    assert pressed.won and pressed.status == ApprovalStatus.APPROVED
    assert not expired.won and "expired" in expired.refusal


async def test_private_copies_are_edited_after_escalation_and_decision(
    open_env: OpenEnv,
) -> None:
    env = await open_env("[approvals]\nnotify_private = true\n")
    async with env.db.claim() as session:
        a = await request_action(session, env.policy, "Rotate the keys", on_timeout="escalate")
    later = a.created_at + timedelta(hours=2, minutes=1)
    async with env.db.claim() as session:
        await sweep(session, env.policy, env.kinds, later)
    assert (await vote(env, a.id, OWNER, "Ana", now=later)).status == ApprovalStatus.APPROVED
    dm = f"approval:{a.id}:dm:{OPERATOR}"
    sent = await rows(env.db, Outbox, Outbox.dedup_key == dm)
    edits = await rows(env.db, Outbox, Outbox.edit_of == dm)
    assert sent, "the operator got no private copy"
    assert [e.buttons for e in edits][-1] is None, "the operator's copy kept live buttons"
    assert "Escalated" in edits[0].text


# -- regressions: secrets and commands -------------------------------------------------------

DEPLOY_SECRET = "s3cr3t-deploy-token-XYZ"

ENV_SCRIPT = """
import os, sys
print("using", sys.argv[1])
for name in ("TELEGRAM_BOT_TOKEN", "ANTHROPIC_API_KEY", "PATH", "HOME"):
    print(name, "set" if name in os.environ else "unset")
"""


async def test_secret_in_deploy_command_stays_out_of_the_approval_and_the_output(
    tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch, open_env: OpenEnv
) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", DEPLOY_SECRET)
    monkeypatch.setenv("HOME", str(tmp_path))
    script = tmp_path / "d.py"
    script.write_text(ENV_SCRIPT, encoding="utf-8")
    table = (
        "[[deploys]]\n"
        'id = "site"\n'
        f'command = "{sys.executable} {script} ${{DEPLOY_TOKEN}}"\n'
        f'verify = ["{site.url}"]\n'
    )
    env = await open_env(table)
    target = target_of(env.config, "site")
    assert target is not None
    assert shown_command(env.config, target) == f"{sys.executable} {script} ${{DEPLOY_TOKEN}}"
    assert DEPLOY_SECRET in env.config.secret_values()
    task_id = await new_task(env.db)
    coder = tool_context(env, "coder", task_id)
    result = await tools.execute(coder, "request_deploy", {"target": "site", "reason": "go"})
    assert result.ok, result.content
    [posted] = await rows(env.db, Outbox, Outbox.dedup_key.like("approval:%"))
    assert (await vote(env, 1, OWNER, "Ana")).won
    assert await DeployWorker(env.config, env.db).run_once()
    [run] = await rows(env.db, DeployRun)
    assert DEPLOY_SECRET not in posted.text and "${DEPLOY_TOKEN}" in posted.text
    assert run.status == DeployStatus.SUCCEEDED
    assert DEPLOY_SECRET not in run.output_tail and "using ***" in run.output_tail
    # The fleet's own secrets are not in the command's environment; the rest is.
    assert "TELEGRAM_BOT_TOKEN unset" in run.output_tail
    assert "ANTHROPIC_API_KEY unset" in run.output_tail
    assert "PATH set" in run.output_tail and "HOME set" in run.output_tail


def _service(tmp_path: Path) -> tuple[str, Path]:
    """A command that starts a long-lived child holding its stdout (a service), then exits."""
    pidfile = tmp_path / "service.pid"
    line = (
        f'{sys.executable} -c "import subprocess,sys; '
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open(sys.argv[1], 'w').write(str(p.pid)); print('deployed, service started')\" "
        f"{pidfile}"
    )
    return line, pidfile


def _alive_then_stop(pidfile: Path) -> bool:
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    os.kill(pid, signal.SIGKILL)
    return True


async def test_deploy_command_leaving_a_service_running_is_not_a_timeout(tmp_path: Path) -> None:
    line, pidfile = _service(tmp_path)
    code, text = await run_command(line, shell=False, cwd=tmp_path, env={}, limit=60)
    assert (code, text) == (0, "deployed, service started\n")
    assert _alive_then_stop(pidfile), "the service the deploy started was killed"


async def test_deploy_output_keeps_its_last_lines_when_long(tmp_path: Path) -> None:
    line = (
        f"{sys.executable} -c \"[print('x' * 99) for _ in range(20_000)]; "
        "print('FATAL: migration 42 failed')\""
    )
    code, text = await run_command(line, shell=False, cwd=tmp_path, env={}, limit=60)
    assert code == 0
    assert text.splitlines()[-1] == "FATAL: migration 42 failed"
    assert len(text.encode()) <= 1_000_000


async def test_long_ref_and_long_texts_fit_the_idempotency_keys(env: Env) -> None:
    task_id = await new_task(env.db)
    coder = tool_context(env, "coder", task_id)
    ref = "release/2026-11-25/" + "hotfix-payment-webhook-retry-" * 3 + "a1b2c3d4e5f6"
    assert len(ref) <= 128 and deploys.valid_ref(ref)
    args = {"target": "site", "ref": ref, "reason": "go"}
    first = await tools.execute(coder, "request_deploy", args)
    assert first.ok, first.content
    again = await tools.execute(coder, "request_deploy", args)  # a retried call asks once
    assert again.ok and again.content == first.content
    [approval] = await rows(env.db, Approval)
    assert approval.payload["ref"] == ref
    hub = tool_context(env, "hub", task_id)
    title = "Check every invoice of the quarter " * 5
    made = await tools.execute(hub, "create_subtask", {"assignee": "coder", "title": title})
    assert made.ok, made.content
