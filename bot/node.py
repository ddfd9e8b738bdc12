"""This process as a node of the fleet (README: Several machines): its row in `nodes`,
registered at start, renewed every `[node] renew_every`, marked stopped at a clean exit, and
saying `leader` while this node leads."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable

from bot.config import Config
from storage import nodes
from storage.db import Database

log = logging.getLogger(__name__)


async def register_node(config: Config, db: Database, role: nodes.NodeRole) -> nodes.Placement:
    """Register this process as node `[node] name` (raises `nodes.NodeNameTaken` when a live
    process holds the name) and say what its workers leave to other nodes."""
    me = nodes.Identity.this_process(config.node.name)
    renew_every = config.node.renew_every
    async with db.session() as session:
        await nodes.register(
            session,
            me,
            role=role,
            may_run=nodes.MayRun.of(config, me.name),
            version=_version(),
            alive_within=nodes.alive_within(renew_every),
        )
    log.info("node %s registered (pid %d on %s)", me.name, me.pid, me.host)
    return nodes.Placement.of(config, me, shared=not db.is_sqlite)


async def keep_node_alive(config: Config, db: Database, me: nodes.Identity) -> None:
    """Renew the node's `last_seen` every `[node] renew_every` until cancelled."""
    every = config.node.renew_every.total_seconds()
    lost = False
    while True:
        await asyncio.sleep(every)
        try:
            async with db.session() as session:
                ours = await nodes.renew(session, me)
        except Exception:  # renewal must outlive a database hiccup
            log.exception("node %s: could not renew", me.name)
            continue
        if not ours and not lost:
            log.error(
                "node %s: another process took this node name while this one was silent; "
                "stop one of them",
                me.name,
            )
        lost = not ours


def with_role(
    db: Database, me: nodes.Identity, duties: Callable[[asyncio.Event], Awaitable[None]]
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """The leader's `duties`, with the node's row saying `leader` while they run and
    `standby` after (what /status and `fleet status` show)."""

    async def mark(role: nodes.NodeRole) -> None:
        try:
            async with db.session() as session:
                await nodes.set_role(session, me.name, role)
        except Exception:  # only what /status shows: leading must not wait for it
            log.exception("node %s: could not record the role %s", me.name, role)

    async def run(term: asyncio.Event) -> None:
        await mark(nodes.NodeRole.LEADER)
        try:
            await duties(term)
        finally:
            await mark(nodes.NodeRole.STANDBY)

    return run


def _version() -> str:
    try:
        return importlib.metadata.version("fleetbridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
