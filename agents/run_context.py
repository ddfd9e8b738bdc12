"""What a run works on and the first message it gets: the task it takes (and what is new on
it), the escalated task it was woken for, and the brief built from them and the inbox."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config
from storage import runs, tasks
from storage.models import Artifact, InboxMessage, Task, TaskEvent


async def _task_for(
    session: AsyncSession, claimed: runs.Claimed
) -> tuple[Task | None, list[TaskEvent]]:
    """The task the run works on, and what is new on it. A wake that brings news for its
    task (a comment, a decision, a deploy report) runs on that task whatever its status,
    except done or cancelled."""
    news: list[TaskEvent] = []
    if claimed.task_id is not None:
        since = await runs.last_seen(
            session, claimed.agent_id, claimed.task_id, before=claimed.run_id
        )
        news = await tasks.news(session, claimed.task_id, claimed.agent_id, since)
    task = await tasks.next_for(session, claimed.agent_id, claimed.task_id, news=bool(news))
    if task is not None and task.id != claimed.task_id:
        since = await runs.last_seen(session, claimed.agent_id, task.id, before=claimed.run_id)
        news = await tasks.news(session, task.id, claimed.agent_id, since)
    return task, news


async def _escalated_task(
    session: AsyncSession, claimed: runs.Claimed, messages: list[InboxMessage]
) -> Task | None:
    """The task of the first unread escalation, unless the run was woken for a task of the
    agent's own (a merged wake keeps the first wake's trigger, so that is not looked at)."""
    if claimed.task_id is not None:
        return None
    for message in messages:
        if message.kind == "escalation" and message.task_id is not None:
            return await tasks.get(session, message.task_id)
    return None


def _brief(
    task: Task | None,
    history: list[TaskEvent],
    messages: list[InboxMessage],
    standing: bool,
    config: Config,
    handoffs: list[Artifact] | None = None,
    news: list[TaskEvent] | None = None,
) -> str:
    """The first user message of a run: what is new, the task, its recent history, the files
    its parent and sibling tasks produced (handoffs), the inbox."""
    lines: list[str] = []
    if task is not None and news:
        lines += [f"New on task #{task.id} since your last run:"]
        for event in news:
            change = f" {event.from_status}->{event.to_status}" if event.to_status else ""
            body = f": {event.body}" if event.body else ""
            lines.append(f"- {event.actor} {event.kind}{change}{body}")
        lines.append("")
    if task is not None:
        priority = next((k for k, v in tasks.PRIORITIES.items() if v == task.priority), "normal")
        lines += [
            f"Your task: #{task.id} {task.title}",
            f"Status: {task.status} · priority {priority} · created by {task.creator}",
        ]
        if task.body:
            lines += ["", "Task description:", task.body]
        if history:
            lines += ["", "History (oldest first):"]
            for event in history:
                when = event.created_at.astimezone(config.tz).strftime("%Y-%m-%d %H:%M")
                change = f" {event.from_status}->{event.to_status}" if event.to_status else ""
                body = f": {event.body}" if event.body else ""
                lines.append(f"- {when} {event.actor} {event.kind}{change}{body}")
    if handoffs:
        lines += ["", "Files from related tasks (read them with read_file):"]
        for artifact in handoffs:
            when = artifact.created_at.astimezone(config.tz).strftime("%Y-%m-%d %H:%M")
            lines.append(
                f"- {artifact.root}:{artifact.path} ({artifact.bytes} bytes, written by "
                f"{artifact.agent_id} for task #{artifact.task_id}, {when})"
            )
    if messages:
        lines += ["", "Inbox (unread):"]
        lines += [f"- from {m.source}: {m.body}" for m in messages]
    if standing:
        lines += ["", "Also do the standing checks listed in HEARTBEAT.md."]
    lines += [
        "",
        "Work with the tools. When the task is finished, call set_status with the evidence; "
        "if you cannot continue, set it blocked with the reason. Keep this run short.",
    ]
    return "\n".join(lines)
