"""Artifacts: the files agents wrote and the saved output of their commands, with the sha256
each had when written, so that evidence naming a file is checked against the file itself."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Artifact, Task, is_row_id, utcnow


async def record(
    session: AsyncSession,
    *,
    task_id: int | None,
    run_id: int | None,
    agent_id: str,
    root: str,
    path: str,
    size: int,
    sha256: str,
    kind: str = "file",
) -> Artifact:
    artifact = Artifact(
        task_id=task_id,
        run_id=run_id,
        agent_id=agent_id,
        root=root,
        path=path,
        bytes=size,
        sha256=sha256,
        kind=kind,
        created_at=utcnow(),
    )
    session.add(artifact)
    await session.flush()
    return artifact


async def get(session: AsyncSession, artifact_id: int) -> Artifact | None:
    if not is_row_id(artifact_id):
        return None
    return await session.get(Artifact, artifact_id)


async def for_task(session: AsyncSession, task_id: int, limit: int = 50) -> list[Artifact]:
    found = await session.execute(
        select(Artifact).where(Artifact.task_id == task_id).order_by(Artifact.id).limit(limit)
    )
    return list(found.scalars())


async def latest(session: AsyncSession, root: str, path: str, agent_id: str) -> Artifact | None:
    """The newest record of root:path (what the file must hold now); "workspace" is the
    workspace of `agent_id`, a shared folder anyone's."""
    stmt = select(Artifact).where(
        Artifact.root == root, Artifact.path == path, Artifact.kind == "file"
    )
    if root == "workspace":
        stmt = stmt.where(Artifact.agent_id == agent_id)
    found = await session.execute(stmt.order_by(Artifact.id.desc()).limit(1))
    return found.scalar_one_or_none()


async def handoffs(session: AsyncSession, task: Task, limit: int = 20) -> list[Artifact]:
    """The files the task's parent and its siblings produced (newest record of each path),
    for the assignee's prompt. A workspace file is another agent's own: not a handoff."""
    if task.parent_id is None:
        return []
    siblings = select(Task.id).where(Task.parent_id == task.parent_id, Task.id != task.id)
    found = await session.execute(
        select(Artifact)
        .where(
            or_(Artifact.task_id == task.parent_id, Artifact.task_id.in_(siblings)),
            Artifact.kind == "file",
            Artifact.root != "workspace",
        )
        .order_by(Artifact.id.desc())
    )
    newest: dict[tuple[str, str], Artifact] = {}
    for artifact in found.scalars():
        newest.setdefault((artifact.root, artifact.path), artifact)
    return list(newest.values())[:limit]
