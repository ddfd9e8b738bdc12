"""The tools on tasks and the org chart: comment, set a task's status, create a subtask,
assign a task, message the hub."""

from __future__ import annotations

from typing import Any

from agents.tools_base import (
    ROW_ID,
    Tool,
    ToolContext,
    ToolResult,
    _schema,
    _text,
    key_part,
    refused,
)
from agents.tools_files import _unverified_file
from storage import inbox, tasks
from storage.statuses import TaskStatus

# The statuses `set_status` offers an agent.
AGENT_SETS = (TaskStatus.IN_PROGRESS, TaskStatus.IN_REVIEW, TaskStatus.DONE, TaskStatus.BLOCKED)


async def _comment(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    task_id = args.get("task_id", ctx.task_id)
    if task_id is None:
        return refused("no task to comment on; give task_id")
    async with ctx.db.claim() as session:
        task = await tasks.get(session, task_id)
        if task is None:
            return refused(f"there is no task #{task_id}")
        if task.assignee != ctx.agent.id and not ctx.org.is_below(task.assignee, ctx.agent.id):
            return refused(
                f"task #{task_id} belongs to {task.assignee}, who does not report to you"
            )
        await tasks.comment(session, task_id, actor=ctx.actor, body=args["text"])
    return ToolResult(True, f"comment added to task #{task_id}", changed=True)


async def _set_status(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    if ctx.task_id is None:
        return refused("this run has no task")
    status, note = args["status"], args.get("note", "").strip()
    if status in (TaskStatus.DONE, TaskStatus.IN_REVIEW) and len(note) < 10:
        return refused(f"{status} needs evidence: say in `note` what was done and how you checked")
    if status == TaskStatus.DONE:
        problem = await _unverified_file(ctx, note)
        if problem is not None:
            return refused(problem)
    if status == TaskStatus.BLOCKED and not note:
        return refused("blocked needs a reason in `note`")
    if status == TaskStatus.DONE and ctx.fallback_model is not None:
        status = TaskStatus.IN_REVIEW
        note = (
            f"{note}\n[moved to in_review, not done: this result came from the fallback model "
            f"{ctx.fallback_model} and needs a review]"
        )
    async with ctx.db.claim() as session:
        outcome = await tasks.transition(
            session,
            ctx.task_id,
            status,
            actor=ctx.actor,
            note=note,
            manager=ctx.org.manager(ctx.agent.id),
        )
    if not outcome.won:
        return refused(outcome.reason)
    final = status in (TaskStatus.DONE, TaskStatus.IN_REVIEW, TaskStatus.BLOCKED)
    return ToolResult(True, f"task #{ctx.task_id} is now {status}", changed=True, ends_run=final)


async def _create_subtask(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    assignee = args["assignee"]
    if assignee not in ctx.org:
        return refused(f'unknown agent "{assignee}"; your reports: {_reports(ctx)}')
    if not ctx.org.is_below(assignee, ctx.agent.id):
        return refused(
            f"{assignee} does not report to you; "
            f"subtasks go only to your reports ({_reports(ctx)})"
        )
    async with ctx.db.claim() as session:
        task = await tasks.create(
            session,
            title=args["title"],
            body=args.get("body", ""),
            assignee=assignee,
            creator=ctx.actor,
            parent_id=ctx.task_id,
            priority=tasks.PRIORITIES[args.get("priority", "normal")],
            max_retries=(ctx.org.get(assignee) or ctx.agent).max_retries,
            idempotency_key=f"subtask:{ctx.run_id}:{assignee}:{key_part(args['title'])}",
        )
    return ToolResult(True, f"created task #{task.id} for {assignee}", changed=True)


async def _assign_task(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    assignee, task_id = args["assignee"], args["task_id"]
    if assignee not in ctx.org:
        return refused(f'unknown agent "{assignee}"; your reports: {_reports(ctx)}')
    if not ctx.org.is_below(assignee, ctx.agent.id):
        return refused(f"{assignee} does not report to you; you may not assign upward or across")
    async with ctx.db.claim() as session:
        task = await tasks.get(session, task_id)
        if task is None:
            return refused(f"there is no task #{task_id}")
        mine = task.assignee == ctx.agent.id or ctx.org.is_below(task.assignee, ctx.agent.id)
        if not mine:
            return refused(f"task #{task_id} is not yours or your reports'")
        outcome = await tasks.reassign(session, task_id, assignee, actor=ctx.actor)
    if not outcome.won:
        return refused(outcome.reason)
    return ToolResult(True, f"task #{task_id} assigned to {assignee}", changed=True)


async def _message_hub(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    hub = ctx.org.hub
    if hub is None or hub.id == ctx.agent.id:
        return refused("you are the hub; comment on tasks or create subtasks instead")
    async with ctx.db.claim() as session:
        await inbox.send(
            session,
            hub.id,
            kind="message",
            source=ctx.actor,
            body=args["text"],
            task_id=ctx.task_id,
        )
    return ToolResult(True, "message left for the hub", changed=True)


def _reports(ctx: ToolContext) -> str:
    return ", ".join(ctx.org.reports(ctx.agent.id)) or "none"


TOOLS: tuple[Tool, ...] = (
    Tool(
        "comment",
        "Add a comment to your current task (or to task_id, yours or a report's).",
        _schema(["text"], text=_text("the comment"), task_id=ROW_ID),
        "comment",
        _comment,
    ),
    Tool(
        "set_status",
        "Move your current task: in_review or done need evidence in `note` (what was done and "
        "how you verified it); blocked needs the reason.",
        _schema(
            ["status"],
            status={"enum": [status.value for status in AGENT_SETS]},
            note=_text("evidence or reason"),
        ),
        None,
        _set_status,
    ),
    Tool(
        "create_subtask",
        "Create a subtask of your current task for an agent that reports to you.",
        _schema(
            ["assignee", "title"],
            assignee={"type": "string"},
            title=_text("short title", 200),
            body=_text("what to do and what done looks like"),
            priority={"enum": list(tasks.PRIORITIES)},
        ),
        "subtask",
        _create_subtask,
    ),
    Tool(
        "assign_task",
        "Give a task (yours or a report's) to an agent that reports to you.",
        _schema(
            ["task_id", "assignee"],
            task_id=ROW_ID,
            assignee={"type": "string"},
        ),
        "assign",
        _assign_task,
    ),
    Tool(
        "message_hub",
        "Leave a message for the hub (the only way to reach other agents).",
        _schema(["text"], text=_text("the message")),
        None,
        _message_hub,
    ),
)
