"""Telling an agent how something it asked for went (an approval's decision, a deploy's or a
command's report, a publication's outcome): a comment on its task, which wakes it, or a
message in its inbox when it asked outside a task.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from storage import inbox, tasks


async def tell_agent(
    session: AsyncSession,
    agent_id: str | None,
    task_id: int | None,
    *,
    actor: str,
    body: str,
    dedup_key: str,
    wake: bool = True,
) -> None:
    """Comment `body` on task `task_id`, or else send it to `agent_id`'s inbox (`dedup_key`
    keeps a repeated report from arriving twice); nothing when there is neither. `wake=False`:
    the agent reads it at its next run."""
    if task_id is not None:
        await tasks.comment(session, task_id, actor=actor, body=body, wake=wake)
    elif agent_id is not None:
        await inbox.send(
            session,
            agent_id,
            kind="message",
            source=actor,
            body=body,
            dedup_key=dedup_key,
            wake=wake,
        )
