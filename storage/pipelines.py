"""Pipeline runs: a parent task and one step per configured step, advanced from the database.

`start` records the run and its steps (all `waiting`). `advance` (the pipeline worker calls it
for every running run, in `Database.claim()`) moves a run one state at a time: a waiting step
starts, with a subtask for its agent, only when the step before it is done and every file it
consumes is in `<folder>/<run id>/` with the sha256 recorded when it was written; a running
step ends with its subtask. A step that fails (or its subtask blocked or cancelled) blocks the
run and the parent task, which wakes the hub with the reason. Every change is a conditional
update, so a restarted process (or two at once) never starts a step twice. Reads are
storage/pipeline_queries.py (re-exported here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import artifacts, tasks
from storage.models import PipelineRun, PipelineStep, utcnow
from storage.pipeline_queries import costs as costs
from storage.pipeline_queries import get as get
from storage.pipeline_queries import running as running
from storage.pipeline_queries import step_of_task as step_of_task
from storage.pipeline_queries import steps_of as steps_of
from storage.statuses import PipelineStatus, TaskStatus
from storage.transition import change

ENDED_STEP = (
    PipelineStatus.DONE,
    PipelineStatus.FAILED,
    PipelineStatus.BLOCKED,
    PipelineStatus.CANCELLED,
)
ACTOR = "system:pipeline"


@dataclass(frozen=True)
class StepSpec:
    step: str
    agent: str
    produces: str | None
    consumes: Sequence[str]
    instructions: str


@dataclass(frozen=True)
class Spec:
    """A configured pipeline as storage needs it: the folder's id and path, the steps."""

    id: str
    folder: str
    folder_path: Path
    steps: Sequence[StepSpec]
    hub: str | None
    max_retries: int = 3


async def start(
    session: AsyncSession,
    spec: Spec,
    topic: str,
    *,
    requested_by: str,
    chat_id: int | None = None,
    topic_id: int | None = None,
) -> PipelineRun:
    """Record a run, its parent task (the hub's, in progress while the steps run) and its
    steps; the worker's next `advance` starts the first step."""
    owner = spec.hub or spec.steps[0].agent
    parent = await tasks.create(
        session,
        title=f"Pipeline {spec.id}: {topic}"[:200],
        assignee=owner,
        creator=requested_by,
        body=(
            f"Pipeline {spec.id} runs its steps in order by itself; this task ends with the "
            "last. Nothing to do on it unless it is blocked: then a step failed, and the reason "
            "says which (an operator can retry the step)."
        ),
        max_retries=spec.max_retries,
        status=TaskStatus.IN_PROGRESS,
    )
    run = PipelineRun(
        pipeline=spec.id,
        topic=topic,
        folder=spec.folder,
        task_id=parent.id,
        status=PipelineStatus.RUNNING,
        reason="",
        requested_by=requested_by,
        chat_id=chat_id,
        topic_id=topic_id,
        shown=0,
        created_at=utcnow(),
    )
    session.add(run)
    await session.flush()
    for position, step in enumerate(spec.steps):
        session.add(
            PipelineStep(
                run_id=run.id,
                position=position,
                step=step.step,
                agent=step.agent,
                produces=step.produces,
                consumes=list(step.consumes),
                status=PipelineStatus.WAITING,
                attempt=0,
                reason="",
            )
        )
    await session.flush()
    return run


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


async def file_problem(session: AsyncSession, run: PipelineRun, spec: Spec, name: str) -> str:
    """Why `name` of this run cannot be handed forward ("" when it can): it must exist with
    the sha256 recorded when it was written."""
    relative = f"{run.id}/{name}"
    shown = f"{spec.folder}:{relative}"
    now = _sha256(spec.folder_path / str(run.id) / name)
    if now is None:
        return f"{shown} does not exist"
    written = await artifacts.latest(session, spec.folder, relative, "")
    if written is None:
        return f"{shown} was not written with the file tools (no sha256 recorded)"
    if written.sha256 != now:
        return (
            f"{shown} changed since it was written (sha256 {written.sha256[:12]}, now {now[:12]})"
        )
    return ""


def _body(run: PipelineRun, spec: Spec, step: StepSpec) -> str:
    lines = [f"Pipeline {spec.id}, step {step.step}. Topic: {run.topic}"]
    if step.instructions:
        lines.append(step.instructions)
    for name in step.consumes:
        lines.append(f"Read {spec.folder}:{run.id}/{name} (the earlier step's file).")
    if step.produces:
        lines.append(
            f"Write {spec.folder}:{run.id}/{step.produces} with write_file, then set this task "
            "done with evidence naming that file."
        )
    return "\n".join(lines)


async def _set_step(session: AsyncSession, step_id: int, came_from: str, **values: object) -> bool:
    return (await change(session, PipelineStep, step_id, values, only_from=(came_from,))).won


async def _block(session: AsyncSession, run: PipelineRun, reason: str) -> bool:
    blocked = await change(
        session,
        PipelineRun,
        run.id,
        {"status": PipelineStatus.BLOCKED, "reason": reason},
        only_from=(PipelineStatus.RUNNING,),
    )
    if not blocked.won:
        return False
    parent = await tasks.get(session, run.task_id) if run.task_id is not None else None
    if parent is not None:
        # Blocking the parent task wakes its assignee, the hub, with the reason.
        await tasks.transition(
            session,
            parent.id,
            TaskStatus.BLOCKED,
            actor=ACTOR,
            note=f"pipeline run #{run.id} ({run.pipeline}: {run.topic}): {reason}",
            manager=parent.assignee,
        )
    return True


async def advance(session: AsyncSession, run_id: int, spec: Spec) -> bool:
    """Take a running run one step further if it can go; True when something changed."""
    run = await get(session, run_id)
    if run is None or run.status != PipelineStatus.RUNNING:
        return False
    parent = await tasks.get(session, run.task_id) if run.task_id is not None else None
    if parent is not None and parent.status == TaskStatus.CANCELLED:
        # A person cancelled the run's task: the run stops with it.
        return not await cancel(session, run_id, by=ACTOR)
    steps = await steps_of(session, run_id)
    current = next((s for s in steps if s.status != PipelineStatus.DONE), None)
    if current is None:
        finished = await change(
            session,
            PipelineRun,
            run_id,
            {"status": PipelineStatus.DONE, "finished_at": utcnow()},
            only_from=(PipelineStatus.RUNNING,),
        )
        if not finished.won:
            return False
        if run.task_id is not None:
            await tasks.transition(
                session, run.task_id, TaskStatus.DONE, actor=ACTOR, note="every step is done"
            )
        return True
    if current.position >= len(spec.steps):
        return await _block(session, run, "the pipeline's configuration lost this step")
    step_spec = spec.steps[current.position]
    if current.status == PipelineStatus.WAITING:
        for name in current.consumes:
            problem = await file_problem(session, run, spec, str(name))
            if problem:
                await _set_step(
                    session,
                    current.id,
                    PipelineStatus.WAITING,
                    status=PipelineStatus.FAILED,
                    reason=problem,
                )
                return await _block(session, run, f"step {current.step} cannot start: {problem}")
        (spec.folder_path / str(run.id)).mkdir(parents=True, exist_ok=True)
        attempt = current.attempt + 1
        if not await _set_step(
            session,
            current.id,
            PipelineStatus.WAITING,
            status=PipelineStatus.RUNNING,
            attempt=attempt,
            started_at=utcnow(),
        ):
            return False
        # The subtask's creation wakes its agent (storage.tasks.create).
        created = await tasks.create(
            session,
            title=f"{run.pipeline} #{run.id} · {current.step}: {run.topic}"[:200],
            assignee=current.agent,
            creator=ACTOR,
            body=_body(run, spec, step_spec),
            parent_id=run.task_id,
            max_retries=spec.max_retries,
            idempotency_key=f"pipeline:{run.id}:{current.position}:{attempt}",
        )
        await _set_step(session, current.id, PipelineStatus.RUNNING, task_id=created.id)
        return True
    if current.status == PipelineStatus.RUNNING and current.task_id is not None:
        subtask = await tasks.get(session, current.task_id)
        if subtask is None:
            return False
        if subtask.status == TaskStatus.DONE:
            problem = (
                await file_problem(session, run, spec, current.produces)
                if current.produces
                else ""
            )
            if problem:
                await _set_step(
                    session,
                    current.id,
                    PipelineStatus.RUNNING,
                    status=PipelineStatus.FAILED,
                    reason=problem,
                )
                return await _block(session, run, f"step {current.step} is done but {problem}")
            return await _set_step(
                session,
                current.id,
                PipelineStatus.RUNNING,
                status=PipelineStatus.DONE,
                finished_at=utcnow(),
            )
        if subtask.status in (TaskStatus.BLOCKED, TaskStatus.CANCELLED):
            why = subtask.blocked_reason or subtask.status
            await _set_step(
                session,
                current.id,
                PipelineStatus.RUNNING,
                status=PipelineStatus.BLOCKED
                if subtask.status == TaskStatus.BLOCKED
                else PipelineStatus.CANCELLED,
                reason=why,
                finished_at=utcnow(),
            )
            return await _block(session, run, f"step {current.step} is {subtask.status}: {why}")
    return False


async def retry_step(session: AsyncSession, run_id: int, *, by: str) -> str:
    """Start the blocked run's failed step again (a new subtask); "" or why not."""
    run = await get(session, run_id)
    if run is None:
        return f"there is no pipeline run #{run_id}"
    if run.status != PipelineStatus.BLOCKED:
        return f"pipeline run #{run_id} is {run.status}, not blocked"
    steps = await steps_of(session, run_id)
    current = next((s for s in steps if s.status != PipelineStatus.DONE), None)
    if current is None:
        return f"pipeline run #{run_id} has no step to retry"
    await change(
        session,
        PipelineStep,
        current.id,
        {"status": PipelineStatus.WAITING, "reason": "", "finished_at": None},
        only_from=ENDED_STEP,
    )
    if current.task_id is not None:
        old = await tasks.get(session, current.task_id)
        if old is not None and old.status in tasks.OPEN:
            await tasks.transition(
                session, old.id, TaskStatus.CANCELLED, actor=by, note="the step is retried"
            )
    resumed = await change(
        session,
        PipelineRun,
        run_id,
        {"status": PipelineStatus.RUNNING, "reason": ""},
        only_from=(PipelineStatus.BLOCKED,),
    )
    if not resumed.won:
        return f"pipeline run #{run_id} changed meanwhile"
    if run.task_id is not None:
        await tasks.transition(
            session, run.task_id, TaskStatus.TODO, actor=by, note="step retried"
        )
        await tasks.transition(session, run.task_id, TaskStatus.IN_PROGRESS, actor=by)
    return ""


async def cancel(session: AsyncSession, run_id: int, *, by: str) -> str:
    """Cancel a running or blocked run and its open subtask; "" or why not."""
    run = await get(session, run_id)
    if run is None:
        return f"there is no pipeline run #{run_id}"
    cancelled = await change(
        session,
        PipelineRun,
        run_id,
        {
            "status": PipelineStatus.CANCELLED,
            "reason": f"cancelled by {by}",
            "finished_at": utcnow(),
        },
        only_from=(PipelineStatus.RUNNING, PipelineStatus.BLOCKED),
    )
    if not cancelled.won:
        return f"pipeline run #{run_id} is {run.status} already"
    for step in await steps_of(session, run_id):
        if step.status in (PipelineStatus.WAITING, PipelineStatus.RUNNING):
            await _set_step(
                session, step.id, step.status, status=PipelineStatus.CANCELLED, reason="cancelled"
            )
        if step.task_id is not None:
            task = await tasks.get(session, step.task_id)
            if task is not None and task.status in tasks.OPEN:
                await tasks.transition(session, task.id, TaskStatus.CANCELLED, actor=by)
    if run.task_id is not None:
        await tasks.transition(session, run.task_id, TaskStatus.CANCELLED, actor=by)
    return ""


async def mark_shown(session: AsyncSession, run_id: int) -> int:
    """Count one more version of the run's message; returns its number (1 = the first)."""
    result = await session.execute(
        update(PipelineRun)
        .where(PipelineRun.id == run_id)
        .values(shown=PipelineRun.shown + 1)
        .returning(PipelineRun.shown)
    )
    return int(result.scalar_one())
