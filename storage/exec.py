"""Exec runs and exec rules: the commands agents run with run_command.

An allowed command runs inside the agent's run (`start`, then `finish`). An asked one becomes
an approval of kind `exec`; its effect (`EXEC`, registered at start, see bot/app.py)
queues exactly one exec run when approved (approval_id is unique: the idempotency key), which
the command worker claims (`claim_next`), runs once and finishes; the result is commented on
the task, which wakes the agent. A run found `running` at start died with the process:
`interrupt_running` reports it `interrupted`, and it is never re-run (same as deploys).

An exec rule is one "Always allow" a person granted: this agent, this exact argv.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import approvals
from storage.agent_notes import tell_agent
from storage.approval_kinds import SYSTEM, Kinds, Outcome, reply, tell_task
from storage.approval_policy import APPROVE, ApprovalPolicy
from storage.db import touch
from storage.models import MAX_ID, Approval, ExecRule, ExecRun, utcnow
from storage.statuses import ApprovalStatus, ExecStatus
from storage.transition import change, claim_oldest, upsert

ENDED = (ExecStatus.FINISHED, ExecStatus.TIMED_OUT, ExecStatus.FAILED, ExecStatus.INTERRUPTED)
ACTOR = "system:exec"


def payload(
    *, argv: Sequence[str], cwd: str, agent_id: str, task_id: int | None, timeout_s: int
) -> dict[str, Any]:
    """An exec approval's payload: exactly what will run, where, for whom."""
    line = " ".join(argv)
    task = f"#{task_id}" if task_id is not None else "none"
    return {
        "argv": list(argv),
        "cwd": cwd,
        "agent": agent_id,
        "timeout_s": timeout_s,
        "summary": f"{agent_id} runs: {line[:200]}",
        "details": (
            f"argv: {list(argv)}\ncwd: {cwd}\nagent: {agent_id}\ntask: {task}\n"
            f"timeout: {timeout_s} s"
        ),
    }


class ExecKind:
    """The `exec` approval's effect. Approved: queue the command to run exactly once (its one
    exec run; the agent hears the result once it ran). Rejected or expired: the agent is told
    at once, with the reason."""

    name = "exec"

    async def settled(
        self, session: AsyncSession, approval: Approval, policy: ApprovalPolicy
    ) -> Outcome | None:
        if approval.status != ApprovalStatus.APPROVED:
            await tell_task(session, approval, policy)
            return None
        body = approval.payload
        await upsert(
            session,
            ExecRun,
            {
                "approval_id": approval.id,
                "agent_id": str(body.get("agent", "")),
                "task_id": approval.task_id,
                "argv": [str(a) for a in body.get("argv", [])],
                "cwd": str(body.get("cwd", "workspace:")),
                "timeout_s": int(body.get("timeout_s", 120)),
                "status": ExecStatus.PENDING,
                "allowed_by": approval.decided_by or SYSTEM,
                "output_tail": "",
                "created_at": utcnow(),
            },
            keys=["approval_id"],
        )
        touch(session, "exec")
        return None


EXEC = ExecKind()


async def start(
    session: AsyncSession,
    *,
    agent_id: str,
    task_id: int | None,
    run_id: int | None,
    argv: Sequence[str],
    cwd: str,
    timeout_s: int,
    allowed_by: str,
) -> ExecRun:
    """Record an allowed command as running (it runs now, in the agent's run)."""
    now = utcnow()
    run = ExecRun(
        agent_id=agent_id,
        task_id=task_id,
        run_id=run_id,
        argv=list(argv),
        cwd=cwd,
        timeout_s=timeout_s,
        status=ExecStatus.RUNNING,
        allowed_by=allowed_by,
        output_tail="",
        started_at=now,
        created_at=now,
    )
    session.add(run)
    await session.flush()
    return run


async def claim_next(
    session: AsyncSession,
    now: datetime | None = None,
    *,
    exclude: Collection[str] = (),
    node: str | None = None,
) -> ExecRun | None:
    """Start the oldest pending (approved) exec run, for `node`, of an agent not in
    `exclude` (the agents that run on other nodes: a command runs where its agent's roots
    are). Run in `Database.claim()`."""
    run = await claim_oldest(
        session,
        ExecRun,
        {"status": ExecStatus.RUNNING, "started_at": now or utcnow(), "node": node},
        only_from=ExecStatus.PENDING,
        where=(ExecRun.agent_id.not_in(exclude or {""}),),
    )
    if run is None:
        return None
    if run.approval_id is not None:
        await approvals.record(
            session, run.approval_id, "exec", ACTOR, f"command #{run.id} started"
        )
    return run


async def finish(
    session: AsyncSession,
    run_id: int,
    status: str,
    *,
    exit_code: int | None,
    duration_s: float,
    output_tail: str,
    artifact_id: int | None,
    note: str,
    report: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Record how a running command ended. For an approved command, `note` (plain text) is
    commented on the task, which wakes the agent, and `report` (HTML) answers the approval in
    the approvals feed."""
    if status not in ENDED:
        raise ValueError(f"{status!r} is not an ended exec status")
    finished = await change(
        session,
        ExecRun,
        run_id,
        {
            "status": status,
            "exit_code": exit_code,
            "duration_s": duration_s,
            "output_tail": output_tail,
            "artifact_id": artifact_id,
            "finished_at": now or utcnow(),
        },
        only_from=(ExecStatus.RUNNING,),
    )
    run = finished.row
    if finished.won and run is not None and run.approval_id is not None:
        await _report(session, run, note, report)
    return finished.won


async def _report(session: AsyncSession, run: ExecRun, note: str, report: str | None) -> None:
    assert run.approval_id is not None
    await approvals.record(
        session, run.approval_id, "exec", ACTOR, f"command #{run.id} {run.status}"
    )
    key = f"exec:{run.id}:{run.status}"
    if report is not None:
        await reply(session, run.approval_id, report, dedup_key=key)
    await tell_agent(session, run.agent_id, run.task_id, actor=ACTOR, body=note, dedup_key=key)


async def interrupt_running(
    session: AsyncSession,
    now: datetime | None = None,
    *,
    node: str | None = None,
    before: datetime | None = None,
) -> list[int]:
    """Commands found `running` at start died with the process (or were left behind by it):
    mark them interrupted and tell their agents. They are never re-run. With `node`, only
    the runs that node claimed (other nodes' commands are alive)."""
    running = select(ExecRun.id).where(ExecRun.status == ExecStatus.RUNNING)
    if node is not None:
        running = running.where(ExecRun.node == node)
    if before is not None:
        # Started by this process already (an allowed command runs in its agent's run,
        # which may start before this recovery gets the database): alive, not interrupted.
        running = running.where(ExecRun.started_at < before)
    found = await session.execute(running)
    done: list[int] = []
    for run_id in found.scalars().all():
        note = (
            f"Command #{run_id} was interrupted: the fleet stopped while it ran. It is not "
            "re-run; check what it did before running it again."
        )
        if await finish(
            session,
            run_id,
            ExecStatus.INTERRUPTED,
            exit_code=None,
            duration_s=0.0,
            output_tail="",
            artifact_id=None,
            note=note,
            report=f"⚠️ {note}",
            now=now,
        ):
            done.append(run_id)
    return done


async def get(session: AsyncSession, run_id: int) -> ExecRun | None:
    if not 0 < run_id <= MAX_ID:
        return None
    return await session.get(ExecRun, run_id, populate_existing=True)


async def of_approval(session: AsyncSession, approval_id: int) -> ExecRun | None:
    found = await session.execute(select(ExecRun).where(ExecRun.approval_id == approval_id))
    return found.scalar_one_or_none()


async def results_for(session: AsyncSession, agent_id: str, limit: int = 5) -> list[ExecRun]:
    """The agent's newest ended approved commands (shown in its prompt)."""
    found = await session.execute(
        select(ExecRun)
        .where(
            ExecRun.agent_id == agent_id,
            ExecRun.approval_id.is_not(None),
            ExecRun.status.in_(ENDED),
        )
        .order_by(ExecRun.id.desc())
        .limit(limit)
    )
    return list(found.scalars())


# -- exec rules -------------------------------------------------------------------------------


async def live_rules(session: AsyncSession, agent_id: str) -> list[tuple[int, list[str]]]:
    found = await session.execute(
        select(ExecRule.id, ExecRule.argv)
        .where(ExecRule.agent_id == agent_id, ExecRule.revoked_at.is_(None))
        .order_by(ExecRule.id)
    )
    return [(rule_id, [str(a) for a in argv]) for rule_id, argv in found.all()]


async def rules(session: AsyncSession, agent_id: str | None = None) -> list[ExecRule]:
    """Live rules, of one agent or all."""
    stmt = select(ExecRule).where(ExecRule.revoked_at.is_(None))
    if agent_id is not None:
        stmt = stmt.where(ExecRule.agent_id == agent_id)
    found = await session.execute(stmt.order_by(ExecRule.agent_id, ExecRule.id))
    return list(found.scalars())


async def revoke(session: AsyncSession, rule_id: int, *, by: str) -> ExecRule | None:
    """Revoke a live rule; None when there is none by that id (or it was revoked already)."""
    if not 0 < rule_id <= MAX_ID:
        return None
    revoked = await change(
        session,
        ExecRule,
        rule_id,
        {"revoked_at": utcnow(), "revoked_by": by},
        where=(ExecRule.revoked_at.is_(None),),
    )
    return revoked.row if revoked.won else None


async def always_allow(
    session: AsyncSession,
    approval_id: int,
    *,
    policy: ApprovalPolicy,
    kinds: Kinds,
    person_id: int,
    person_name: str,
) -> approvals.Decision:
    """Approve an exec approval and add the exec rule for its agent and exact argv, in one
    transaction: the command runs once now, and the same argv later without asking."""
    decision = await approvals.decide(
        session,
        approval_id,
        person_id=person_id,
        policy=policy,
        kinds=kinds,
        person_name=person_name,
        vote=APPROVE,
        kind="exec",
    )
    approval = decision.approval
    if decision.decided and decision.status == ApprovalStatus.APPROVED and approval is not None:
        argv = [str(a) for a in approval.payload.get("argv", [])]
        agent_id = str(approval.payload.get("agent", ""))
        if not any(found == argv for _, found in await live_rules(session, agent_id)):
            session.add(
                ExecRule(
                    agent_id=agent_id,
                    argv=argv,
                    granted_by=f"person:{person_id}",
                    approval_id=approval_id,
                    created_at=utcnow(),
                )
            )
            await session.flush()
    return decision
