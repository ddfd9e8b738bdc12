"""Deploy runs: one per approved deploy approval (its approval_id is the idempotency key),
claimed one at a time per target, finished once, and found `interrupted` after a crash.

The deploy worker (integrations/deploy.py) does the work; these are its transitions, each a
conditional update that writes the approval's audit event and the report in one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import approvals, inbox, outbox, tasks
from storage.models import Approval, DeployRun, utcnow

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
INTERRUPTED = "interrupted"

FINISHED = (SUCCEEDED, ROLLED_BACK, FAILED, INTERRUPTED)
ACTOR = "system:deploy"
# pg_advisory_xact_lock key held while a node claims a deploy run.
_CLAIM_KEY = int.from_bytes(
    hashlib.sha256(b"fleetbridge-deploy-claim").digest()[:8], "big", signed=True
)


async def claim_next(
    session: AsyncSession,
    now: datetime | None = None,
    *,
    exclude: Collection[str] = (),
    node: str | None = None,
) -> DeployRun | None:
    """Start the oldest pending run whose target has no run in progress and is not in
    `exclude` (the targets whose `on` names another node), for `node`. Run in
    `Database.claim()`."""
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        # Nodes claim one at a time (SQLite's claim() is serialized already): two nodes
        # skipping each other's locked rows could otherwise start two runs of one target.
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLAIM_KEY})
    busy = select(DeployRun.target).where(DeployRun.status == RUNNING)
    found = await session.execute(
        select(DeployRun.id)
        .where(
            DeployRun.status == PENDING,
            DeployRun.target.not_in(busy),
            DeployRun.target.not_in(exclude or {""}),
        )
        .order_by(DeployRun.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    run_id = found.scalar_one_or_none()
    if run_id is None:
        return None
    result = await session.execute(
        update(DeployRun)
        .where(DeployRun.id == run_id, DeployRun.status == PENDING)
        .values(status=RUNNING, started_at=now, node=node)
        .returning(DeployRun.id)
    )
    if result.first() is None:
        return None
    run = await session.get(DeployRun, run_id, populate_existing=True)
    assert run is not None
    if run.approval_id is not None:
        await approvals.record(session, run.approval_id, "deploy", ACTOR, f"run #{run.id} started")
    return run


async def finish(
    session: AsyncSession,
    run_id: int,
    status: str,
    *,
    steps: list[dict[str, Any]],
    output_tail: str,
    report: str,
    note: str,
    now: datetime | None = None,
) -> bool:
    """Record how a running deploy ended, with its report (HTML, posted as a reply to the
    approval message) and `note` (plain text, commented on the requesting task)."""
    if status not in FINISHED:
        raise ValueError(f"{status!r} is not a finished deploy status")
    result = await session.execute(
        update(DeployRun)
        .where(DeployRun.id == run_id, DeployRun.status == RUNNING)
        .values(status=status, steps=steps, output_tail=output_tail, finished_at=now or utcnow())
        .returning(DeployRun.id)
    )
    if result.first() is None:
        return False
    run = await session.get(DeployRun, run_id, populate_existing=True)
    assert run is not None
    await _report(session, run, report, note)
    return True


async def interrupt_running(
    session: AsyncSession, now: datetime | None = None, *, node: str | None = None
) -> list[int]:
    """Runs found `running` at start died with the process: mark them interrupted and report
    them. They are never re-run: a half-done deploy needs a person to look. With `node`,
    only the runs that node claimed (other nodes' runs are alive)."""
    running = select(DeployRun.id).where(DeployRun.status == RUNNING)
    if node is not None:
        running = running.where(DeployRun.node == node)
    found = await session.execute(running)
    done: list[int] = []
    for run_id in found.scalars().all():
        note = (
            f"Deploy run #{run_id} was interrupted: the process stopped while it ran. "
            "It is not re-run; check the target and request a new deploy if needed."
        )
        if await finish(
            session,
            run_id,
            INTERRUPTED,
            steps=[],
            output_tail="",
            report=f"⚠️ {note}",
            note=note,
            now=now,
        ):
            done.append(run_id)
    return done


async def _report(session: AsyncSession, run: DeployRun, report: str, note: str) -> None:
    approval = (
        await session.get(Approval, run.approval_id) if run.approval_id is not None else None
    )
    if approval is None:
        return
    await approvals.record(session, approval.id, "deploy", ACTOR, f"run #{run.id} {run.status}")
    settings = approvals.settings_of(session)
    if settings.feed is not None:
        await outbox.enqueue(
            session,
            settings.feed,
            report,
            dedup_key=f"deploy:{run.id}:{run.status}",
            reply_to=f"approval:{approval.id}",
        )
    # The report, not the approval, wakes the agent that asked (storage.approvals._deploy).
    if approval.task_id is not None:
        await tasks.comment(session, approval.task_id, actor=ACTOR, body=note)
    elif approval.requested_by.startswith("agent:"):
        await inbox.send(
            session,
            approval.requested_by.removeprefix("agent:"),
            kind="message",
            source=ACTOR,
            body=note,
            dedup_key=f"deploy:{run.id}:{run.status}",
        )


async def get(session: AsyncSession, run_id: int) -> DeployRun | None:
    return await session.get(DeployRun, run_id, populate_existing=True)


async def recent(session: AsyncSession, limit: int = 10) -> list[DeployRun]:
    found = await session.execute(select(DeployRun).order_by(DeployRun.id.desc()).limit(limit))
    return list(reversed(found.scalars().all()))
