"""What a settled approval does, by kind: the `Kind` protocol its owner implements, the
`Kinds` registry the process builds from the owners' kinds at start (bot/app.py), and the
effect most kinds share, telling the requester the outcome (`tell_task`, `Told`).

storage.approvals runs `Kinds.settled` in the decision's transaction; it imports no kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.views import approvals as view
from storage import outbox
from storage.agent_notes import tell_agent
from storage.approval_policy import KINDS, ApprovalPolicy
from storage.models import Approval, Outbox

SYSTEM = "system:approvals"


class Outcome:
    """What a kind's effect reports to whoever decided (a budget raise says the new budget);
    each kind that reports something subclasses it. Most report nothing (None)."""


class Kind(Protocol):
    """What a settled approval of one kind does: its owner's effect, run in the decision's
    transaction after the status is set (approved, rejected or expired; not cancelled)."""

    @property
    def name(self) -> str: ...

    async def settled(
        self, session: AsyncSession, approval: Approval, policy: ApprovalPolicy
    ) -> Outcome | None: ...


class Kinds:
    """The registry of kinds' effects, built once from the owners' `Kind` objects."""

    def __init__(self, kinds: Iterable[Kind]) -> None:
        self._kinds: dict[str, Kind] = {}
        for kind in kinds:
            if kind.name not in KINDS:
                raise ValueError(f"unknown approval kind {kind.name!r}")
            if kind.name in self._kinds:
                raise ValueError(f"approval kind {kind.name!r} registered twice")
            self._kinds[kind.name] = kind

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    async def settled(
        self, session: AsyncSession, approval: Approval, policy: ApprovalPolicy
    ) -> Outcome | None:
        """Run the effect of the approval's kind (none if its kind has no effect)."""
        kind = self._kinds.get(approval.kind)
        return None if kind is None else await kind.settled(session, approval, policy)


# -- telling the requester ----------------------------------------------------------------------


async def tell_task(
    session: AsyncSession, approval: Approval, policy: ApprovalPolicy, *, wake: bool = True
) -> None:
    """Comment the outcome on the requesting task; the comment wakes its agent, on approval
    and on rejection alike (with the reason). An agent that asked outside a task gets the
    outcome in its inbox, which wakes it too. `wake=False`: the agent reads it at its next
    run (an approved deploy: the deploy's report wakes it)."""
    await tell_agent(
        session,
        requesting_agent(approval),
        approval.task_id,
        actor=approval.decided_by or SYSTEM,
        body=view.told(approval, policy),
        dedup_key=f"approval:{approval.id}:{approval.status}",
        wake=wake,
    )


def requesting_agent(approval: Approval) -> str | None:
    """The agent that asked for the approval (None: a person or the system asked)."""
    requester = approval.requested_by
    return requester.removeprefix("agent:") if requester.startswith("agent:") else None


@dataclass(frozen=True)
class Told:
    """A kind whose only effect is telling the requester the outcome (`action`)."""

    name: str

    async def settled(
        self, session: AsyncSession, approval: Approval, policy: ApprovalPolicy
    ) -> Outcome | None:
        await tell_task(session, approval, policy)
        return None


async def reply(session: AsyncSession, approval_id: int, text: str, *, dedup_key: str) -> None:
    """A message (HTML) replying to the approval's message in the chat it was posted to (a
    deploy's or a command's report); nothing if the approval was never posted."""
    key = f"approval:{approval_id}"
    posted = await session.execute(select(Outbox).where(Outbox.dedup_key == key))
    row = posted.scalar_one_or_none()
    if row is None:
        return
    to = outbox.Destination(row.chat_id, row.topic, row.feed)
    await outbox.enqueue(session, to, text, dedup_key=dedup_key, reply_to=key)
