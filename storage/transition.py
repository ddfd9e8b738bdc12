"""The one way a lifecycle row changes state, and the one upsert.

`change` is a conditional `UPDATE … WHERE <expected state> RETURNING id`: of two racing
writers (two nodes, a button pressed twice, a sweep and a person) exactly one wins, and the
loser learns it from the outcome instead of an exception. What the change implies (the event
row, the outbox rows, a wake) is written by `then` in the same transaction, only by the
winner, so a change and its consequences commit together or not at all.

`upsert` hides the one place SQLite and PostgreSQL spell a statement differently.
`affected` reads a bulk statement's row count with its type, so callers need no
`type: ignore`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from sqlalchemy import ColumnElement, CursorResult, Result, TextClause, inspect, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute


class _Lifecycle(Protocol):
    """A mapped row; its key is its primary key (`id`, or `agent_id`, `check_id`...)."""

    __tablename__: Any


M = TypeVar("M", bound=_Lifecycle)

Then = Callable[[M], Awaitable[None] | Iterable[object] | None]


@dataclass(frozen=True)
class Changed(Generic[M]):
    """Whether this writer won, and the row as it is now (None: there is no such row).

    A lost change carries the current row, so the caller can say why: "task #4 is already
    done", not "something went wrong".
    """

    won: bool
    row: M | None

    @property
    def missing(self) -> bool:
        return not self.won and self.row is None


async def change(
    session: AsyncSession,
    model: type[M],
    row_id: int | str,
    values: Mapping[str, Any],
    *,
    only_from: Collection[str] | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    status: str = "status",
    then: Then[M] | None = None,
    fetch: bool = True,
) -> Changed[M]:
    """Apply `values` to the row whose primary key is `row_id` if its `status` column is in
    `only_from` (when given) and every `where` holds. On a win, `then(row)` runs with the
    updated row: it may add rows itself (an awaitable) or return the rows to add (events,
    outbox messages). `fetch=False` (no `then`): the caller needs only whether it won, so a
    win loads no row (`row` is None) and costs a bare UPDATE (a triage pass decides
    thousands)."""
    table = cast(Any, model)
    [key] = inspect(model).primary_key
    conditions: list[ColumnElement[bool]] = [key == row_id, *where]
    if only_from is not None:
        column: InstrumentedAttribute[Any] = getattr(table, status)
        conditions.append(column.in_(list(only_from)))
    if not fetch and then is None:
        bare = await session.execute(
            update(table).where(*conditions).values(**values).returning(key)
        )
        if bare.first() is not None:
            return Changed(True, None)
        return Changed(False, await session.get(model, row_id, populate_existing=True))
    # RETURNING the row itself: a win costs one statement (the sender makes three a message).
    result = await session.execute(
        update(table).where(*conditions).values(**values).returning(table),
        execution_options={"populate_existing": True},
    )
    row: M | None = result.scalars().first()
    won = row is not None
    if row is None:  # lost, or no such row: the row as it is now says which
        row = await session.get(model, row_id, populate_existing=True)
    elif then is not None:
        added = then(row)
        if isinstance(added, Awaitable):
            await added
        elif added is not None:
            session.add_all(list(added))
    return Changed(won, row)


async def claim_oldest(
    session: AsyncSession,
    model: type[M],
    values: Mapping[str, Any],
    *,
    only_from: str,
    where: Iterable[ColumnElement[bool]] = (),
    status: str = "status",
) -> M | None:
    """The work queue's claim: lock the oldest row whose `status` is `only_from` (and every
    `where` holds), skipping rows another transaction holds, and `change` it with `values`.
    None when there is none to claim. Run in `Database.claim()`."""
    table = cast(Any, model)
    found = await session.execute(
        select(table.id)
        .where(getattr(table, status) == only_from, *where)
        .order_by(table.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    row_id = found.scalar_one_or_none()
    if row_id is None:
        return None
    claimed = await change(session, model, row_id, values, only_from=(only_from,), status=status)
    return claimed.row if claimed.won else None


def insert(session: AsyncSession, model: Any) -> Any:
    """`INSERT` in the session's dialect (both spell `ON CONFLICT` the same way in
    SQLAlchemy, from different modules)."""
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(model)


async def upsert(
    session: AsyncSession,
    model: Any,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
    update_columns: Sequence[str] | Mapping[str, Any] | None = None,
    index_where: ColumnElement[bool] | TextClause | None = None,
    only_if: ColumnElement[bool] | None = None,
) -> bool:
    """Insert `values`, or on a conflict on `keys` update `update_columns` (a list of the
    columns to take from `values`, or a mapping of column to new value); with no
    `update_columns`, a conflict leaves the row alone. `only_if` limits the update to an
    existing row for which it holds (a claim: the row is taken only when free). True when a
    row was written."""
    stmt = insert(session, model).values(**values)
    if update_columns is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys), index_where=index_where)
    else:
        new = (
            dict(update_columns)
            if isinstance(update_columns, Mapping)
            else {name: getattr(stmt.excluded, name) for name in update_columns}
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys), index_where=index_where, set_=new, where=only_if
        )
    return affected(await session.execute(stmt)) > 0


def affected(result: Result[Any]) -> int:
    """The number of rows a bulk UPDATE/DELETE/INSERT touched."""
    return int(cast(CursorResult[Any], result).rowcount)
