"""Approvals: requests for a human decision. Deciding comes with the approvals feature; this
module creates the rows so agents can ask."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Approval

KINDS = ("deploy", "action", "publish", "incident_p0", "budget")


async def request(
    session: AsyncSession,
    *,
    kind: str,
    payload: dict[str, Any],
    requested_by: str,
    task_id: int | None = None,
    deadline: datetime | None = None,
    idempotency_key: str | None = None,
) -> Approval:
    """Create a pending approval; with a used `idempotency_key`, return the existing one."""
    if kind not in KINDS:
        raise ValueError(f"unknown approval kind {kind!r}")
    if idempotency_key is not None:
        found = await session.execute(
            select(Approval).where(Approval.idempotency_key == idempotency_key)
        )
        existing = found.scalar_one_or_none()
        if existing is not None:
            return existing
    approvers = {"role": "owner"} if kind in ("deploy", "incident_p0") else {"role": "operator"}
    approval = Approval(
        kind=kind,
        payload=payload,
        requested_by=requested_by,
        task_id=task_id,
        approvers=approvers,
        deadline=deadline,
        idempotency_key=idempotency_key,
    )
    session.add(approval)
    await session.flush()
    return approval
