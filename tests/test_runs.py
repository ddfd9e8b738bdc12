"""Wakes, claims and backoff in storage/, on a real SQLite database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from storage import inbox, runs, tasks
from storage.db import Database
from storage.models import Run, Usage, utcnow
from storage.statuses import RunStatus, TaskStatus


async def queued(db: Database, agent: str) -> list[Run]:
    async with db.session() as session:
        stmt = select(Run).where(Run.agent_id == agent, Run.status == RunStatus.QUEUED)
        return list((await session.execute(stmt)).scalars())


async def test_a_second_wake_merges_into_the_queued_run(db: Database) -> None:
    later = utcnow() + timedelta(minutes=5)
    async with db.claim() as session:
        assert await runs.wake(session, "coder", "schedule", not_before=later)
    async with db.claim() as session:
        assert not await runs.wake(session, "coder", "assignment", task_id=None)
    [run] = await queued(db, "coder")
    assert run.not_before <= utcnow()  # the earlier start wins
    async with db.claim() as session:
        assert await runs.wake(session, "hub", "manual")
    assert len(await queued(db, "hub")) == 1


async def test_one_running_run_per_agent(db: Database) -> None:
    lease = timedelta(minutes=1)
    async with db.claim() as session:
        await runs.wake(session, "coder", "manual")
    async with db.claim() as session:
        [first] = await runs.claim_due(session, "a", lease, exclude=set(), limit=5)
    async with db.claim() as session:
        await runs.wake(session, "coder", "manual")
    async with db.claim() as session:
        assert await runs.claim_due(session, "b", lease, exclude=set(), limit=5) == []
    async with db.claim() as session:
        assert await runs.finish(session, first.run_id, "a", RunStatus.SUCCEEDED, "ok")
    async with db.claim() as session:
        [second] = await runs.claim_due(session, "b", lease, exclude=set(), limit=5)
    assert second.agent_id == "coder" and second.run_id != first.run_id


async def test_wakes_back_off_after_two_runs_that_changed_nothing(db: Database) -> None:
    async with db.claim() as session:
        task = await tasks.create(
            session, title="Loop", assignee="coder", creator="person:1", max_retries=3
        )
    expected = {0: 0, 1: 0, 2: 2, 3: 4, 4: 8, 5: 16, 6: 30, 7: 30}
    for idle, minutes in expected.items():
        async with db.claim() as session:
            await session.execute(delete(Run))
            if idle:
                await tasks.note_run(session, task.id, changed=False)
            before = utcnow()
            await runs.wake(session, "coder", "comment", task_id=task.id)
        [run] = await queued(db, "coder")
        delay = (run.not_before - before).total_seconds() / 60
        assert abs(delay - minutes) < 0.05, (idle, delay)
    async with db.claim() as session:
        await tasks.note_run(session, task.id, changed=True)
        await session.execute(delete(Run))
        await runs.wake(session, "coder", "comment", task_id=task.id)
    [run] = await queued(db, "coder")
    assert run.not_before <= utcnow()


async def test_a_comment_by_the_assignee_does_not_wake_it(db: Database) -> None:
    async with db.claim() as session:
        task = await tasks.create(
            session, title="Quiet", assignee="coder", creator="person:1", max_retries=3
        )
        await session.execute(delete(Run))
    async with db.claim() as session:
        await tasks.comment(session, task.id, actor="agent:coder", body="note to self")
    assert await queued(db, "coder") == []
    async with db.claim() as session:
        await tasks.comment(session, task.id, actor="person:1", body="any news?")
    assert len(await queued(db, "coder")) == 1


async def test_illegal_transitions_name_the_current_status(db: Database) -> None:
    async with db.claim() as session:
        task = await tasks.create(
            session, title="T", assignee="coder", creator="person:1", max_retries=3
        )
        done = await tasks.transition(session, task.id, TaskStatus.DONE, actor="agent:coder")
        assert not done.won and done.reason == f"task #{task.id} is todo; it cannot become done"
        blocked = await tasks.transition(session, task.id, TaskStatus.BLOCKED, actor="agent:coder")
        assert not blocked.won and blocked.reason == "blocking needs a reason"
        ok = await tasks.transition(
            session,
            task.id,
            TaskStatus.BLOCKED,
            actor="agent:coder",
            note="no access",
            manager="hub",
        )
        assert ok.won
        [message] = await inbox.unread(session, "hub")
        assert "no access" in message.body and message.kind == "escalation"
        again = await tasks.transition(
            session, task.id, TaskStatus.BLOCKED, actor="agent:coder", note="x"
        )
        assert not again.won and again.reason == f"task #{task.id} is already blocked"


async def test_pruning_deletes_old_idle_heartbeats_and_keeps_work_and_spend(db: Database) -> None:
    old = utcnow() - timedelta(days=8)
    async with db.session() as session:
        task = await tasks.create(
            session, title="t", assignee="coder", creator="person:1", max_retries=3
        )
        for _ in range(3):
            assert await runs.record_if_idle(session, "hub")
        await runs.record_skipped(session, "hub", "schedule", "paused")
        hub = select(Run).where(Run.agent_id == "hub").order_by(Run.id)
        rows = list((await session.execute(hub)).scalars())
        deferred = Run(
            agent_id="coder", trigger="retry", status=RunStatus.SKIPPED, finished_at=old, turns=0
        )
        worked = Run(
            agent_id="coder", trigger="assignment", task_id=task.id, status=RunStatus.SUCCEEDED,
            finished_at=old, turns=2,
        )  # fmt: skip
        session.add_all([deferred, worked])
        await session.flush()
        session.add(Usage(agent_id="coder", run_id=deferred.id, model="m", profile="p"))
        for row in rows[:2]:
            row.finished_at = old
    async with db.session() as session:
        assert await runs.prune_idle(session, utcnow() - timedelta(days=7)) == 2
    async with db.session() as session:
        left = list((await session.execute(select(Run.id).order_by(Run.id))).scalars())
    # The coder's queued wake, the two recent hub heartbeats, the deferred run with its usage
    # row, and the task's run.
    assert left[1:] == [rows[2].id, rows[3].id, deferred.id, worked.id]


async def test_a_follow_up_wake_does_not_cancel_a_retry_backoff(db: Database) -> None:
    # Regression (issue 18.17): the follow-up wake queued after a failed run merged into the
    # retry and kept its own, earlier start: four runs in 0.2 s, then blocked.
    backoff = utcnow() + timedelta(minutes=2)
    async with db.claim() as session:
        assert await runs.wake(session, "coder", runs.RETRY, not_before=backoff)
        assert not await runs.wake(session, "coder", "followup")
    [run] = await queued(db, "coder")
    assert run.not_before >= backoff - timedelta(seconds=1)


async def test_wakes_no_person_waits_for_are_claimed_after_the_merge_window(
    db: Database,
) -> None:
    lease, window = timedelta(minutes=1), timedelta(minutes=5)
    async with db.claim() as session:
        await runs.wake(session, "hub", "message")
        await runs.wake(session, "hub", "escalation")  # merges into the first
        await runs.wake(session, "coder", "assignment")
    async with db.claim() as session:
        claimed = await runs.claim_due(session, "a", lease, exclude=set(), limit=5, window=window)
        due = await runs.next_due_at(session, window)
    assert [c.agent_id for c in claimed] == ["coder"]  # a person's wake is not delayed
    assert due is not None and due > utcnow() + timedelta(minutes=4)
    assert len(await queued(db, "hub")) == 1


async def test_the_failure_streak_counts_failed_runs_since_the_last_success(
    db: Database,
) -> None:
    lease = timedelta(minutes=1)
    for status in (
        RunStatus.FAILED,
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.SKIPPED,
        RunStatus.FAILED,
    ):
        async with db.claim() as session:
            await runs.wake(session, "coder", "manual")
        async with db.claim() as session:
            [run] = await runs.claim_due(session, "a", lease, exclude=set(), limit=1)
            await runs.finish(session, run.run_id, "a", status, status)
            if status == RunStatus.SUCCEEDED:
                after = run.run_id
    async with db.session() as session:
        streak = await runs.failure_streak(session, "coder")
    assert streak.count == 2 and streak.first_run_id == after + 1
