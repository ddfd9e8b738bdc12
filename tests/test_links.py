"""What a message of the bot shows (storage.links), stop requests and review transitions, on a
real SQLite database."""

from __future__ import annotations

from datetime import timedelta

from storage import incidents, links, outbox, runs, tasks
from storage.db import Database
from storage.models import utcnow
from storage.statuses import RunStatus, TaskStatus

CHAT = -100500


async def sent(db: Database, key: str, message_id: int, edit_of: str | None = None) -> None:
    """Queue the row `key` (unless it is queued already) and record it sent as `message_id`."""
    async with db.session() as session:
        row = await outbox.enqueue(
            session, outbox.Destination(CHAT), "text", dedup_key=key, edit_of=edit_of
        )
        if row is None:
            queued = await outbox.latest(session, key)
            assert queued is not None
            row = queued.id
    async with db.session() as session:
        assert await outbox.record_part(session, row, 0, [message_id])


async def test_a_message_is_traced_to_the_task_approval_or_incident_it_shows(
    db: Database,
) -> None:
    async with db.claim() as session:
        task = await tasks.create(
            session, title="Fix it", assignee="coder", creator="person:1", max_retries=3
        )
        incident, _ = await incidents.open_incident(
            session,
            fingerprint="check:site",
            severity="P2",
            title="site down",
            source="check:site",
        )
        await incidents.announce(
            session, [incident.id], to=outbox.Destination(CHAT), text="down", buttons=None
        )
        await runs.wake(session, "coder", "manual", task_id=task.id)
        [claimed] = await runs.claim_due(
            session, "me", timedelta(minutes=1), exclude=set(), limit=1
        )
    await sent(db, "approval:7", 10)
    await sent(db, "approval:7:approved", 10, edit_of="approval:7")
    await sent(db, f"incident-alert:{incident.id}", 11)
    await sent(db, f"activity:{claimed.run_id}", 12)
    await sent(db, f"task-status:{task.id}:todo:done:1.0", 13)
    async with db.session() as session:
        await links.remember(
            session,
            chat_id=CHAT,
            message_id=14,
            kind=links.SENDBACK,
            entity_id=task.id,
            person_id=5,
        )
    async with db.session() as session:
        found = [await links.shown_by(session, CHAT, m) for m in range(10, 16)]
        assert await links.shown_by(session, CHAT + 1, 10) is None
    assert found == [
        links.Shown(links.APPROVAL, 7),
        links.Shown(links.INCIDENT, incident.id),
        links.Shown(links.TASK, task.id),
        links.Shown(links.TASK, task.id),
        links.Shown(links.SENDBACK, task.id, 5),
        None,
    ]
    async with db.claim() as session:
        assert await incidents.note(session, incident.id, actor="person:1", text="on it")
        assert not await incidents.note(session, incident.id + 1, actor="person:1", text="x")
    async with db.session() as session:
        assert (await incidents.confirmations(session, incident.id))[-1]["note"] == "on it"


async def test_a_stop_request_is_taken_once_and_only_for_running_runs(db: Database) -> None:
    async with db.claim() as session:
        task = await tasks.create(
            session, title="Loop", assignee="coder", creator="person:1", max_retries=3
        )
        [claimed] = await runs.claim_due(
            session, "me", timedelta(minutes=1), exclude=set(), limit=1
        )
        await runs.set_task(session, claimed.run_id, task.id)
    async with db.claim() as session:
        assert await runs.request_stop(session, by="person:2", agent_id="hub") == []
        [stop] = await runs.request_stop(session, by="person:2", agent_id="coder")
        assert stop == runs.StopRequest(claimed.run_id, "coder", task.id)
        # The first request wins: a second one (the task cancelled meanwhile) changes nothing.
        outcome = await tasks.transition(session, task.id, TaskStatus.CANCELLED, actor="person:3")
        assert outcome.won
        assert await runs.stops_requested(session, [claimed.run_id, 999]) == {
            claimed.run_id: "person:2"
        }
        assert await runs.finish(session, claimed.run_id, "me", RunStatus.CANCELLED, "stopped")
        assert await runs.request_stop(session, by="person:2", run_id=claimed.run_id) == []


async def test_accept_and_send_back_only_move_a_task_in_review(db: Database) -> None:
    async with db.claim() as session:
        task = await tasks.create(
            session, title="Notes", assignee="coder", creator="agent:hub", max_retries=3
        )
        refused = await tasks.accept(session, task.id, actor="person:1")
        assert not refused.won and refused.reason == f"task #{task.id} is todo, not in_review"
        await tasks.transition(session, task.id, TaskStatus.IN_PROGRESS, actor="agent:coder")
        await tasks.transition(
            session, task.id, TaskStatus.IN_REVIEW, actor="agent:coder", note="evidence"
        )
        empty = await tasks.send_back(session, task.id, actor="person:1", reason=" ")
        assert not empty.won and empty.reason == "sending back needs a reason"
        back = await tasks.send_back(session, task.id, actor="person:1", reason="add tests")
        assert back.won and back.task is not None and back.task.status == TaskStatus.IN_PROGRESS
        history = await tasks.events(session, task.id)
        assert history[-1].kind == "comment" and history[-1].body == "Sent back: add tests"
        # What is new to coder since it last looked: everything others did on the task.
        news = await tasks.news(session, task.id, "coder", utcnow() - timedelta(minutes=1))
        assert [(e.kind, e.body) for e in news] == [
            ("status", "sent back"),
            ("comment", "Sent back: add tests"),
        ]
        await tasks.transition(
            session, task.id, TaskStatus.IN_REVIEW, actor="agent:coder", note="evidence 2"
        )
        accepted = await tasks.accept(session, task.id, actor="person:1")
        assert (
            accepted.won and accepted.task is not None and accepted.task.status == TaskStatus.DONE
        )
