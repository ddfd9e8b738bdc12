"""Deploy requests and runs: a deploy approval is requested (`payload`, `in_flight`), its
effect (`DEPLOY`, registered at start) queues one run per approved approval (its approval_id
is the idempotency key), claimed one at a time per target, finished once, and found
`interrupted` after a crash.

The deploy worker (integrations/deploy.py) does the work; these are its transitions, each a
conditional update that writes the approval's audit event and the report in one transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage import approvals
from storage.agent_notes import tell_agent
from storage.approval_kinds import Outcome, reply, requesting_agent, tell_task
from storage.approval_policy import ApprovalPolicy
from storage.db import touch
from storage.models import Approval, DeployRun, utcnow
from storage.statuses import ApprovalStatus, DeployStatus
from storage.transition import change, claim_oldest, upsert

FINISHED = (
    DeployStatus.SUCCEEDED,
    DeployStatus.ROLLED_BACK,
    DeployStatus.FAILED,
    DeployStatus.INTERRUPTED,
)
ACTOR = "system:deploy"
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


# -- requests ---------------------------------------------------------------------------------


def valid_ref(ref: str) -> bool:
    """A commit, tag or version: no spaces, no shell metacharacters, at most 128 characters."""
    return bool(_REF.match(ref))


def payload(target: str, ref: str | None, command: str, reason: str = "") -> dict[str, Any]:
    """A deploy approval's payload."""
    return {"target": target, "ref": ref, "command": command, "details": reason}


async def in_flight(
    session: AsyncSession, target: str, *, idempotency_key: str | None = None
) -> str | None:
    """What keeps a new deploy of `target` from being requested: a deploy approval still
    pending, or a deploy run pending or running; None if nothing. The pending approval made
    with `idempotency_key` does not count: asking again with it is the same request."""
    stmt = select(Approval).where(
        Approval.kind == "deploy", Approval.status == ApprovalStatus.PENDING
    )
    if idempotency_key is not None:
        stmt = stmt.where(
            (Approval.idempotency_key != idempotency_key) | Approval.idempotency_key.is_(None)
        )
    waiting = await session.execute(stmt.order_by(Approval.id))
    for approval in waiting.scalars():
        if approval.payload.get("target") == target:
            return f"approval #{approval.id} for a deploy of {target} is pending"
    running = await session.execute(
        select(DeployRun.id, DeployRun.status, DeployRun.approval_id)
        .where(
            DeployRun.target == target,
            DeployRun.status.in_((DeployStatus.PENDING, DeployStatus.RUNNING)),
        )
        .order_by(DeployRun.id)
        .limit(1)
    )
    row = running.first()
    if row is not None:
        return f"deploy run #{row[0]} of {target} (approval #{row[2]}) is {row[1]}"
    return None


class DeployKind:
    """The `deploy` approval's effect. Approved: queue exactly one deploy run (approval_id is
    unique: the idempotency key). The requesting task hears the decision either way; an
    approved deploy wakes its agent only with its report (`finish`), so the agent never acts
    on a deploy that has not run yet."""

    name = "deploy"

    async def settled(
        self, session: AsyncSession, approval: Approval, policy: ApprovalPolicy
    ) -> Outcome | None:
        approved = approval.status == ApprovalStatus.APPROVED
        await tell_task(session, approval, policy, wake=not approved)
        if not approved:
            return None
        await upsert(
            session,
            DeployRun,
            {
                "target": str(approval.payload.get("target", "")),
                "approval_id": approval.id,
                "ref": approval.payload.get("ref"),
                "status": DeployStatus.PENDING,
                "steps": [],
                "output_tail": "",
                "created_at": utcnow(),
            },
            keys=["approval_id"],
        )
        touch(session, "deploys")
        return None


DEPLOY = DeployKind()


# -- runs -------------------------------------------------------------------------------------
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
    busy = select(DeployRun.target).where(DeployRun.status == DeployStatus.RUNNING)
    run = await claim_oldest(
        session,
        DeployRun,
        {"status": DeployStatus.RUNNING, "started_at": now, "node": node},
        only_from=DeployStatus.PENDING,
        where=(DeployRun.target.not_in(busy), DeployRun.target.not_in(exclude or {""})),
    )
    if run is None:
        return None
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
    finished = await change(
        session,
        DeployRun,
        run_id,
        {
            "status": status,
            "steps": steps,
            "output_tail": output_tail,
            "finished_at": now or utcnow(),
        },
        only_from=(DeployStatus.RUNNING,),
    )
    if finished.won and finished.row is not None:
        await _report(session, finished.row, report, note)
    return finished.won


async def interrupt_running(
    session: AsyncSession, now: datetime | None = None, *, node: str | None = None
) -> list[int]:
    """Runs found `running` at start died with the process: mark them interrupted and report
    them. They are never re-run: a half-done deploy needs a person to look. With `node`,
    only the runs that node claimed (other nodes' runs are alive)."""
    running = select(DeployRun.id).where(DeployRun.status == DeployStatus.RUNNING)
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
            DeployStatus.INTERRUPTED,
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
    await reply(session, approval.id, report, dedup_key=f"deploy:{run.id}:{run.status}")
    # The report, not the approval, wakes the agent that asked (`DeployKind`).
    await tell_agent(
        session,
        requesting_agent(approval),
        approval.task_id,
        actor=ACTOR,
        body=note,
        dedup_key=f"deploy:{run.id}:{run.status}",
    )


async def get(session: AsyncSession, run_id: int) -> DeployRun | None:
    return await session.get(DeployRun, run_id, populate_existing=True)


async def recent(session: AsyncSession, limit: int = 10) -> list[DeployRun]:
    found = await session.execute(select(DeployRun).order_by(DeployRun.id.desc()).limit(limit))
    return list(reversed(found.scalars().all()))
