"""Nodes: the `fleet run` processes sharing one database, each a row that says who it is,
when it last said it was alive, its role and what it may run.

A node registers when it starts and renews `last_seen` every `[node] renew_every`. A name is
held by one process at a time: a second process starting with the name of a node that is
alive (renewed within `alive_within`, another pid or host) is refused. A node that stops
renewing without a clean stop is silent (the watchdog reports it); its run leases expire on
their own and its runs are retried by a node that may run their agent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config
from storage.models import Node, Run, utcnow
from storage.statuses import RunStatus
from storage.transition import affected, upsert

# A node is alive while it renewed within this many of its renewal intervals: one late
# renewal (a slow database, a busy event loop) does not make it silent.
SILENT_AFTER_RENEWALS = 3


class NodeRole(StrEnum):
    LEADER = "leader"  # polls Telegram, runs the fleet-wide jobs and the outbox sender
    STANDBY = "standby"  # a worker ready to take over when the leader dies


@dataclass(frozen=True)
class Identity:
    """This process as a node: its name, and the host and pid that hold the name."""

    name: str
    host: str
    pid: int

    @classmethod
    def this_process(cls, name: str) -> Identity:
        return cls(name, socket.gethostname(), os.getpid())

    @property
    def owner(self) -> str:
        """The lease owner of the runs this process claims (runs.lease_owner)."""
        return lease_owner(self.host, self.pid)


def lease_owner(host: str, pid: int) -> str:
    return f"{host}:{pid}"[-64:]


@dataclass(frozen=True)
class MayRun:
    """The ids of the agents, checks and deploy targets a node may run."""

    agents: tuple[str, ...]
    checks: tuple[str, ...]
    deploys: tuple[str, ...]

    @classmethod
    def of(cls, config: Config, node: str) -> MayRun:
        """What `config` lets node `node` run: agents whose `runs_on` is empty or names it,
        checks and deploy targets whose `on` is unset or names it."""
        return cls(
            tuple(a.id for a in config.agents if not a.runs_on or node in a.runs_on),
            tuple(c.id for c in config.checks if c.on in (None, node)),
            tuple(d.id for d in config.deploys if d.on in (None, node)),
        )

    @classmethod
    def from_row(cls, row: Node) -> MayRun:
        may = row.may_run or {}
        return cls(
            tuple(may.get("agents", ())),
            tuple(may.get("checks", ())),
            tuple(may.get("deploys", ())),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "agents": list(self.agents),
            "checks": list(self.checks),
            "deploys": list(self.deploys),
        }


@dataclass(frozen=True)
class Placement:
    """This node, for its workers: the lease owner of its claims, and what it leaves to
    other nodes (agents whose `runs_on`, checks and deploy targets whose `on`, name other
    nodes). Ids missing from the config are claimed anywhere, so that a node can fail them
    instead of leaving them queued. On SQLite there is one node, which runs everything."""

    node: Identity
    shared: bool  # several nodes may share the database (PostgreSQL)
    agents_elsewhere: frozenset[str] = frozenset()
    checks_elsewhere: frozenset[str] = frozenset()
    deploys_elsewhere: frozenset[str] = frozenset()

    @staticmethod
    def claims(placement: Placement | None) -> tuple[str | None, str | None]:
        """(the node name a worker's claims record, the node whose claims it recovers at
        start): with other nodes on the database a starting worker recovers only its own,
        since theirs are alive; alone (None: all) it recovers every claim a crash left."""
        if placement is None:
            return None, None
        name = placement.node.name
        return name, name if placement.shared else None

    @classmethod
    def of(cls, config: Config, node: Identity, *, shared: bool) -> Placement:
        if not shared:
            return cls(node, shared)
        name = node.name
        return cls(
            node,
            shared,
            frozenset(a.id for a in config.agents if a.runs_on and name not in a.runs_on),
            frozenset(c.id for c in config.checks if c.on not in (None, name)),
            frozenset(d.id for d in config.deploys if d.on not in (None, name)),
        )


class NodeNameTaken(Exception):
    """Another live process holds this node name; the message says which and what to do."""


def alive_within(renew_every: timedelta) -> timedelta:
    return renew_every * SILENT_AFTER_RENEWALS


async def register(
    session: AsyncSession,
    me: Identity,
    *,
    role: NodeRole,
    may_run: MayRun,
    version: str,
    alive_within: timedelta,
    now: datetime | None = None,
) -> None:
    """Take the node name for this process, or raise `NodeNameTaken` when a live process
    holds it. A holder is dead when it stopped cleanly, has not renewed within
    `alive_within`, or ran on this host under a pid that no longer exists."""
    now = now or utcnow()
    values = {
        "name": me.name,
        "host": me.host,
        "pid": me.pid,
        "version": version,
        "started_at": now,
        "last_seen": now,
        "stopped_at": None,
        "role": str(role),
        "may_run": may_run.as_json(),
    }
    columns = [key for key in values if key != "name"]
    free = or_(
        Node.stopped_at.is_not(None),
        Node.last_seen < now - alive_within,
        and_(Node.host == me.host, Node.pid == me.pid),
    )
    if await upsert(session, Node, values, keys=["name"], update_columns=columns, only_if=free):
        return
    holder = await session.get(Node, me.name, populate_existing=True)
    if holder is None:  # deleted between the two statements: try once more
        if await upsert(session, Node, values, keys=["name"], update_columns=columns):
            return
        raise NodeNameTaken(f"node {me.name!r} could not be registered; start it again")
    if holder.host == me.host and not _pid_exists(holder.pid):
        # Killed on this machine (kill -9, a power cut) and restarted before it went silent.
        taken = await session.execute(
            update(Node)
            .where(Node.name == me.name, Node.host == holder.host, Node.pid == holder.pid)
            .values({key: values[key] for key in columns})
        )
        if affected(taken):
            return
    seen = int((now - holder.last_seen).total_seconds())
    raise NodeNameTaken(
        f"node name {me.name!r} is held by a running fleet (pid {holder.pid} on "
        f"{holder.host}, last seen {seen} s ago). Give this machine its own [node] name in "
        "the config, or stop the other process first."
    )


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


async def renew(session: AsyncSession, me: Identity, now: datetime | None = None) -> bool:
    """Say this node is alive. False: the name is no longer ours (another process took it
    after we went silent)."""
    result = await session.execute(
        update(Node)
        .where(Node.name == me.name, Node.host == me.host, Node.pid == me.pid)
        .values(last_seen=now or utcnow(), stopped_at=None)
    )
    return affected(result) > 0


async def stop(session: AsyncSession, me: Identity, now: datetime | None = None) -> bool:
    """A clean stop: the node is not reported silent, and its name is free at once."""
    now = now or utcnow()
    result = await session.execute(
        update(Node)
        .where(Node.name == me.name, Node.host == me.host, Node.pid == me.pid)
        .values(last_seen=now, stopped_at=now)
    )
    return affected(result) > 0


async def set_role(session: AsyncSession, name: str, role: NodeRole) -> bool:
    """Record node `name`'s role (the leader election calls this); False: no such node."""
    result = await session.execute(update(Node).where(Node.name == name).values(role=str(role)))
    return affected(result) > 0


async def all_nodes(session: AsyncSession, *, stopped: bool = True) -> list[Node]:
    """Every node by name; without the cleanly stopped ones when `stopped` is False."""
    stmt = select(Node).order_by(Node.name)
    if not stopped:
        stmt = stmt.where(Node.stopped_at.is_(None))
    return list((await session.execute(stmt)).scalars())


async def silent(session: AsyncSession, *, alive_within: timedelta) -> list[Node]:
    """Nodes that stopped renewing without a clean stop."""
    stmt = (
        select(Node)
        .where(Node.stopped_at.is_(None), Node.last_seen < utcnow() - alive_within)
        .order_by(Node.name)
    )
    return list((await session.execute(stmt)).scalars())


async def runs_in_flight(session: AsyncSession, rows: Collection[Node]) -> dict[str, int]:
    """Running runs per node name, of the processes now holding the names in `rows`."""
    stmt = (
        select(Run.lease_owner, func.count())
        .where(Run.status == RunStatus.RUNNING, Run.lease_owner.is_not(None))
        .group_by(Run.lease_owner)
    )
    by_owner = {str(owner): int(count) for owner, count in (await session.execute(stmt)).all()}
    return {row.name: by_owner.get(lease_owner(row.host, row.pid), 0) for row in rows}


def node_of_owner(rows: Collection[Node], owner: str | None) -> Node | None:
    """The node whose process holds (or held) a lease."""
    return next((n for n in rows if lease_owner(n.host, n.pid) == owner), None)
