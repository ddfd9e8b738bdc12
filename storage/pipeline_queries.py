"""Reading pipeline runs: a run, its steps, the step a task is, what its runs cost. Nothing
here changes a row (storage/pipelines.py does); storage.pipelines re-exports these."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import PipelineRun, PipelineStep, Run, Usage, is_row_id
from storage.statuses import PipelineStatus


async def get(session: AsyncSession, run_id: int) -> PipelineRun | None:
    if not is_row_id(run_id):
        return None
    return await session.get(PipelineRun, run_id, populate_existing=True)


async def steps_of(session: AsyncSession, run_id: int) -> list[PipelineStep]:
    found = await session.execute(
        select(PipelineStep)
        .where(PipelineStep.run_id == run_id)
        .order_by(PipelineStep.position)
        .execution_options(populate_existing=True)
    )
    return list(found.scalars())


async def step_of_task(session: AsyncSession, task_id: int | None) -> str | None:
    """ "content #3 · draft" when the task is a pipeline step's subtask, else None."""
    if task_id is None:
        return None
    found = await session.execute(
        select(PipelineRun.pipeline, PipelineStep.run_id, PipelineStep.step)
        .join(PipelineRun, PipelineRun.id == PipelineStep.run_id)
        .where(PipelineStep.task_id == task_id)
        .limit(1)
    )
    row = found.first()
    return None if row is None else f"{row.pipeline} #{row.run_id} · {row.step}"


async def running(session: AsyncSession) -> list[PipelineRun]:
    found = await session.execute(
        select(PipelineRun)
        .where(PipelineRun.status == PipelineStatus.RUNNING)
        .order_by(PipelineRun.id)
    )
    return list(found.scalars())


async def costs(session: AsyncSession, task_ids: Sequence[int]) -> dict[int, Decimal]:
    """What the model calls of runs on each task cost."""
    if not task_ids:
        return {}
    found = await session.execute(
        select(Run.task_id, func.sum(Usage.cost_usd))
        .join(Usage, Usage.run_id == Run.id)
        .where(Run.task_id.in_(task_ids))
        .group_by(Run.task_id)
    )
    return {
        int(task_id): Decimal(cost or 0) for task_id, cost in found.all() if task_id is not None
    }
