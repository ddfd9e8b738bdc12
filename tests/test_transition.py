"""storage/transition.py, the one conditional update and the one upsert, on SQLite and on
PostgreSQL: a change is won or lost (the loser gets the current row), a missing row says so,
`then` runs only for the winner, two changers at once make one winner; an upsert inserts,
leaves alone or updates."""

from __future__ import annotations

import asyncio

import pytest_asyncio
from sqlalchemy import func, select, update

from storage.db import Database
from storage.models import AgentState, JobBeat, Task, TaskEvent, utcnow
from storage.statuses import TaskStatus
from storage.transition import Changed, affected, change, upsert
from tests import pg

pg_database = pg.pg_database


pg_migrated = pg.pg_migrated
backend_url = pg.backend_url
any_db = pg.any_db


@pytest_asyncio.fixture
async def db(any_db: Database) -> Database:
    return any_db


async def _task(db: Database, status: TaskStatus = TaskStatus.TODO) -> int:
    async with db.session() as session:
        task = Task(
            title="t", body="", assignee="coder", creator="person:1", priority=2,
            status=status, max_retries=3,
        )  # fmt: skip
        session.add(task)
        await session.flush()
        return task.id


async def _events(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(select(func.count(TaskEvent.id)))).scalar_one())


async def _start(db: Database, task_id: int) -> Changed[Task]:
    async with db.session() as session:
        return await change(
            session,
            Task,
            task_id,
            {"status": TaskStatus.IN_PROGRESS, "retries": Task.retries + 1},
            only_from=(TaskStatus.TODO,),
            then=lambda task: [
                TaskEvent(task_id=task.id, kind="status", actor="test", to_status=task.status)
            ],
        )


async def test_a_change_from_an_allowed_status_wins_with_the_row_as_it_is_now(
    db: Database,
) -> None:
    task_id = await _task(db)
    changed = await _start(db, task_id)
    assert changed.won and not changed.missing
    assert changed.row is not None
    # The row is the updated one, SQL expressions evaluated by the database.
    assert changed.row.status == TaskStatus.IN_PROGRESS and changed.row.retries == 1
    assert await _events(db) == 1


async def test_a_lost_change_returns_the_current_row_and_runs_no_then(db: Database) -> None:
    task_id = await _task(db, TaskStatus.DONE)
    changed = await _start(db, task_id)
    assert not changed.won and changed.row is not None
    assert changed.row.status == TaskStatus.DONE and changed.row.retries == 0
    assert await _events(db) == 0


async def test_a_change_of_a_missing_row_says_it_is_missing(db: Database) -> None:
    changed = await _start(db, 12345)
    assert not changed.won and changed.missing and changed.row is None
    assert await _events(db) == 0


async def test_where_conditions_and_an_awaitable_then(db: Database) -> None:
    task_id = await _task(db)
    ran: list[int] = []

    async def then(task: Task) -> None:
        ran.append(task.id)

    async with db.session() as session:
        lost = await change(
            session, Task, task_id, {"assignee": "hub"}, where=[Task.assignee == "nobody"],
            then=then,
        )  # fmt: skip
        won = await change(
            session, Task, task_id, {"assignee": "hub"}, where=[Task.assignee == "coder"],
            then=then,
        )  # fmt: skip
    assert not lost.won and won.won and ran == [task_id]
    assert won.row is not None and won.row.assignee == "hub"


async def test_a_row_keyed_by_name_changes_too(db: Database) -> None:
    async with db.session() as session:
        session.add(AgentState(agent_id="coder", paused=False, updated_at=utcnow()))
    async with db.session() as session:
        first = await change(
            session, AgentState, "coder", {"paused": True}, where=[AgentState.paused.is_(False)]
        )
        second = await change(
            session, AgentState, "coder", {"paused": True}, where=[AgentState.paused.is_(False)]
        )
    assert first.won and not second.won
    assert second.row is not None and second.row.paused


async def test_two_changers_at_once_make_one_winner(db: Database) -> None:
    task_id = await _task(db)
    outcomes = await asyncio.gather(*(_start(db, task_id) for _ in range(4)))
    assert sorted(o.won for o in outcomes) == [False, False, False, True]
    assert await _events(db) == 1
    async with db.session() as session:
        task = await session.get(Task, task_id)
        assert task is not None and task.retries == 1


async def test_upsert_inserts_then_leaves_alone_then_updates(db: Database) -> None:
    now = utcnow()
    row = {"job_id": "tick", "interval_s": 60, "runs": 1, "failures": 0, "last_start": now}
    async with db.session() as session:
        assert await upsert(session, JobBeat, row, keys=["job_id"])
        assert not await upsert(session, JobBeat, {**row, "runs": 7}, keys=["job_id"])
    async with db.session() as session:
        beat = await session.get(JobBeat, "tick")
        assert beat is not None and beat.runs == 1
    async with db.session() as session:
        assert await upsert(
            session, JobBeat, {**row, "interval_s": 30}, keys=["job_id"],
            update_columns={"runs": JobBeat.runs + 1},
        )  # fmt: skip
        assert await upsert(
            session, JobBeat, {**row, "interval_s": 30}, keys=["job_id"],
            update_columns=["interval_s"],
        )  # fmt: skip
    async with db.session() as session:
        beat = await session.get(JobBeat, "tick")
        assert beat is not None and (beat.runs, beat.interval_s) == (2, 30)


async def test_affected_counts_the_rows_of_a_bulk_statement(db: Database) -> None:
    for _ in range(3):
        await _task(db)
    async with db.session() as session:
        assert affected(await session.execute(update(Task).values(priority=1))) == 3
        none = update(Task).where(Task.id < 0).values(priority=0)
        assert affected(await session.execute(none)) == 0
