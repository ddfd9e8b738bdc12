"""Exec runs and exec rules: the commands agents run with run_command.

An allowed command runs inside the agent's run (`start`, then `finish`). An asked one becomes
an approval of kind `exec`; its effect (`on_decided`, registered in storage.approvals.EFFECTS)
queues exactly one exec run when approved (approval_id is unique: the idempotency key), which
the command worker claims (`claim_next`), runs once and finishes; the result is commented on
the task, which wakes the agent. A run found `running` at start died with the process:
`interrupt_running` reports it `interrupted`, and it is never re-run (same as deploys).

An exec rule is one "Always allow" a person granted: this agent, this exact argv.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage import approvals, inbox, outbox, tasks
from storage.db import touch
from storage.models import Approval, ExecRule, ExecRun, utcnow

PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"  # the command exited (any exit code)
TIMED_OUT = "timed_out"
FAILED = "failed"  # it could not start (a missing program, a cwd gone)
INTERRUPTED = "interrupted"

ENDED = (FINISHED, TIMED_OUT, FAILED, INTERRUPTED)
ACTOR = "system:exec"
MAX_ID = 2**31 - 1


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


async def on_decided(session: AsyncSession, approval: Approval) -> object:
    """An approved exec approval: queue its one exec run (storage.approvals calls this)."""
    body = approval.payload
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(ExecRun)
        .values(
            approval_id=approval.id,
            agent_id=str(body.get("agent", "")),
            task_id=approval.task_id,
            argv=[str(a) for a in body.get("argv", [])],
            cwd=str(body.get("cwd", "workspace:")),
            timeout_s=int(body.get("timeout_s", 120)),
            status=PENDING,
            allowed_by=approval.decided_by or approvals.SYSTEM,
            output_tail="",
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["approval_id"])
    )
    touch(session, "exec")
    return None


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
        status=RUNNING,
        allowed_by=allowed_by,
        output_tail="",
        started_at=now,
        created_at=now,
    )
    session.add(run)
    await session.flush()
    return run


async def claim_next(session: AsyncSession, now: datetime | None = None) -> ExecRun | None:
    """Start the oldest pending (approved) exec run. Run in `Database.claim()`."""
    found = await session.execute(
        select(ExecRun.id)
        .where(ExecRun.status == PENDING)
        .order_by(ExecRun.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    run_id = found.scalar_one_or_none()
    if run_id is None:
        return None
    result = await session.execute(
        update(ExecRun)
        .where(ExecRun.id == run_id, ExecRun.status == PENDING)
        .values(status=RUNNING, started_at=now or utcnow())
        .returning(ExecRun.id)
    )
    if result.first() is None:
        return None
    run = await session.get(ExecRun, run_id, populate_existing=True)
    assert run is not None
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
    result = await session.execute(
        update(ExecRun)
        .where(ExecRun.id == run_id, ExecRun.status == RUNNING)
        .values(
            status=status,
            exit_code=exit_code,
            duration_s=duration_s,
            output_tail=output_tail,
            artifact_id=artifact_id,
            finished_at=now or utcnow(),
        )
        .returning(ExecRun.id)
    )
    if result.first() is None:
        return False
    run = await session.get(ExecRun, run_id, populate_existing=True)
    assert run is not None
    if run.approval_id is not None:
        await _report(session, run, note, report)
    return True


async def _report(session: AsyncSession, run: ExecRun, note: str, report: str | None) -> None:
    assert run.approval_id is not None
    await approvals.record(
        session, run.approval_id, "exec", ACTOR, f"command #{run.id} {run.status}"
    )
    settings = approvals.settings_of(session)
    if report is not None and settings.feed is not None:
        await outbox.enqueue(
            session,
            settings.feed,
            report,
            dedup_key=f"exec:{run.id}:{run.status}",
            reply_to=f"approval:{run.approval_id}",
        )
    if run.task_id is not None:
        await tasks.comment(session, run.task_id, actor=ACTOR, body=note)
    else:
        await inbox.send(
            session,
            run.agent_id,
            kind="message",
            source=ACTOR,
            body=note,
            dedup_key=f"exec:{run.id}:{run.status}",
        )


async def interrupt_running(session: AsyncSession, now: datetime | None = None) -> list[int]:
    """Commands found `running` at start died with the process (or were left behind by it):
    mark them interrupted and tell their agents. They are never re-run."""
    found = await session.execute(select(ExecRun.id).where(ExecRun.status == RUNNING))
    done: list[int] = []
    for run_id in found.scalars().all():
        note = (
            f"Command #{run_id} was interrupted: the fleet stopped while it ran. It is not "
            "re-run; check what it did before running it again."
        )
        if await finish(
            session,
            run_id,
            INTERRUPTED,
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
    result = await session.execute(
        update(ExecRule)
        .where(ExecRule.id == rule_id, ExecRule.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_by=by)
        .returning(ExecRule.id)
    )
    if result.first() is None:
        return None
    return await session.get(ExecRule, rule_id, populate_existing=True)


async def always_allow(
    session: AsyncSession, approval_id: int, *, person_id: int, person_name: str
) -> approvals.Decision:
    """Approve an exec approval and add the exec rule for its agent and exact argv, in one
    transaction: the command runs once now, and the same argv later without asking."""
    decision = await approvals.decide(
        session,
        approval_id,
        person_id=person_id,
        person_name=person_name,
        vote=approvals.APPROVE,
        kind="exec",
    )
    approval = decision.approval
    if decision.decided and decision.status == approvals.APPROVED and approval is not None:
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
