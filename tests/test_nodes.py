"""Nodes sharing one database (issue 16): registration and the refusal of a live name,
renewal, clean stops, silent nodes, and claims of runs, deploys and check slots that honour
`runs_on` / `on`, with several Database objects (as several processes would hold) on each
backend. The same with real `fleet run` processes is tests/test_e2e_nodes.py. One file for
the whole of nodes (so over 400 lines), in sections: registration, what a node may run, claims
across nodes, seeing it."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.config import Config, load_config
from bot.views.nodes import node_lines
from bot.watchdog import silent_nodes
from storage import deploys, nodes, runs, tasks
from storage import exec as exec_runs
from storage.db import Database
from storage.models import DeployRun, ExecRun, Node, Run, utcnow
from storage.statuses import DeployStatus, ExecStatus, RunStatus, TaskStatus
from tests import pg
from tests.fleet import write_config

pg_database = pg.pg_database

ALIVE = timedelta(seconds=9)
DEAD_PID = 4_194_305  # above Linux's largest pid_max: no process has it


pg_migrated = pg.pg_migrated
pg_db = pg.pg_db
backend_url = pg.backend_url
any_db = pg.any_db


NODE_AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-sonnet-4-6"
runs_on = ["mac"]

[[agents]]
id = "ops"
reports_to = "hub"
workspace = "workspaces/ops"
model = "claude-sonnet-4-6"
runs_on = ["vps", "mac"]
"""

NODE_EXTRA = """
[[checks]]
id = "site"
command = "true"
every = "1m"
on = "vps"

[[checks]]
id = "anywhere"
command = "true"
every = "1m"

[[deploys]]
id = "web"
command = "true"
on = "vps"

[[deploys]]
id = "docs"
command = "true"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456789:AAH-not-a-real-token")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-unused")
    path = write_config(tmp_path, "http://127.0.0.1:9", agents=NODE_AGENTS, extra=NODE_EXTRA)
    return load_config(path)


def me(name: str, pid: int = 100, host: str = "host-a") -> nodes.Identity:
    return nodes.Identity(name, host, pid)


MAY = nodes.MayRun(("hub",), (), ())


async def register(db: Database, who: nodes.Identity, **kw: object) -> None:
    async with db.session() as session:
        await nodes.register(
            session,
            who,
            role=nodes.NodeRole.LEADER,
            may_run=MAY,
            version="test",
            alive_within=ALIVE,
            **kw,  # type: ignore[arg-type]
        )


async def node_row(db: Database, name: str) -> Node:
    async with db.session() as session:
        row = await session.get(Node, name)
    assert row is not None
    return row


# --- registration ---------------------------------------------------------------------------


async def test_a_live_node_name_refuses_a_second_process_and_says_who_holds_it(
    any_db: Database,
) -> None:
    await register(any_db, me("vps", pid=DEAD_PID - 1, host="elsewhere"))
    with pytest.raises(nodes.NodeNameTaken) as refused:
        await register(any_db, me("vps", pid=200, host="host-b"))
    said = str(refused.value)
    assert "'vps'" in said and "elsewhere" in said and str(DEAD_PID - 1) in said
    assert "[node] name" in said
    row = await node_row(any_db, "vps")
    assert (row.host, row.role, row.may_run) == ("elsewhere", "leader", MAY.as_json())
    # The same process registering again (a restart of the worker inside it) is fine.
    await register(any_db, me("vps", pid=DEAD_PID - 1, host="elsewhere"))
    # Another name is another node.
    await register(any_db, me("mac", pid=200, host="host-b"))
    async with any_db.session() as session:
        assert [n.name for n in await nodes.all_nodes(session)] == ["mac", "vps"]


async def test_a_name_is_free_after_a_clean_stop_or_once_its_holder_went_silent(
    any_db: Database,
) -> None:
    first = me("vps", pid=1, host="other-host")
    await register(any_db, first)
    async with any_db.session() as session:
        assert await nodes.stop(session, first)
    await register(any_db, me("vps", pid=2, host="host-b"))  # stopped: free at once
    # Silent for longer than alive_within: free.
    async with any_db.session() as session:
        await session.execute(
            update(Node).values(last_seen=utcnow() - ALIVE - timedelta(seconds=1))
        )
    await register(any_db, me("vps", pid=3, host="host-c"))
    row = await node_row(any_db, "vps")
    assert (row.pid, row.host, row.stopped_at) == (3, "host-c", None)
    # The old holder's renewal now fails: the name is no longer its own.
    async with any_db.session() as session:
        assert not await nodes.renew(session, me("vps", pid=2, host="host-b"))
        assert await nodes.renew(session, me("vps", pid=3, host="host-c"))


async def test_a_holder_killed_on_this_host_does_not_block_its_restart(
    any_db: Database,
) -> None:
    here = nodes.Identity.this_process("vps")
    await register(any_db, nodes.Identity("vps", here.host, DEAD_PID))  # renewed just now
    await register(any_db, here)  # its pid is gone on this host: taken over at once
    assert (await node_row(any_db, "vps")).pid == here.pid


async def test_two_processes_registering_one_name_at_once_one_wins(pg_db: Database) -> None:
    dbs = [Database(pg_db.url) for _ in range(4)]
    try:

        async def one(i: int) -> bool:
            try:
                await register(dbs[i], me("vps", pid=1000 + i, host=f"h{i}"))
            except nodes.NodeNameTaken:
                return False
            return True

        won = await asyncio.gather(*(one(i) for i in range(4)))
    finally:
        for db in dbs:
            await db.dispose()
    assert sum(won) == 1


async def test_set_role_renew_and_silent_nodes(any_db: Database) -> None:
    await register(any_db, me("vps"))
    await register(any_db, me("mac", host="host-b"))
    async with any_db.session() as session:
        assert await nodes.set_role(session, "mac", nodes.NodeRole.STANDBY)
        assert not await nodes.set_role(session, "nowhere", nodes.NodeRole.STANDBY)
        await session.execute(
            update(Node)
            .where(Node.name == "mac")
            .values(last_seen=utcnow() - timedelta(minutes=5))
        )
    async with any_db.session() as session:
        assert [n.name for n in await nodes.silent(session, alive_within=ALIVE)] == ["mac"]
        assert await nodes.renew(session, me("mac", host="host-b"))
    async with any_db.session() as session:
        assert await nodes.silent(session, alive_within=ALIVE) == []
        assert (await session.get(Node, "mac")).role == "standby"  # type: ignore[union-attr]


# --- what a node may run ----------------------------------------------------------------------


def test_may_run_and_placement_follow_runs_on_and_on(config: Config) -> None:
    vps = nodes.MayRun.of(config, "vps")
    assert vps == nodes.MayRun(("hub", "ops"), ("site", "anywhere"), ("web", "docs"))
    mac = nodes.MayRun.of(config, "mac")
    assert mac == nodes.MayRun(("hub", "coder", "ops"), ("anywhere",), ("docs",))
    placed = nodes.Placement.of(config, me("mac"), shared=True)
    assert placed.agents_elsewhere == frozenset()  # mac may run every agent
    assert (placed.checks_elsewhere, placed.deploys_elsewhere) == (
        frozenset({"site"}),
        frozenset({"web"}),
    )
    assert nodes.Placement.of(config, me("vps"), shared=True).agents_elsewhere == {"coder"}
    # On SQLite there is one node, which runs everything.
    alone = nodes.Placement.of(config, me("vps"), shared=False)
    assert not (alone.agents_elsewhere or alone.checks_elsewhere or alone.deploys_elsewhere)


# --- claims across nodes ----------------------------------------------------------------------


async def test_runs_are_claimed_once_one_per_agent_and_only_where_the_agent_may_run(
    pg_db: Database,
) -> None:
    """Three nodes' run workers (three Database objects) claim 300 wakes of 20 agents as
    fast as they can: no run claimed twice, never two runs of one agent at once, each run
    on a node its agent may run on."""
    agents = [f"a{i}" for i in range(20)]
    # a0..a4 only on node b; a5..a9 on a or c; the rest anywhere.
    allowed = {
        agent: {"b"} if i < 5 else {"a", "c"} if i < 10 else {"a", "b", "c"}
        for i, agent in enumerate(agents)
    }
    wakes = 300
    names = ("a", "b", "c")
    dbs = {name: Database(pg_db.url) for name in names}
    lease = timedelta(minutes=5)
    claimed_by: dict[int, list[str]] = {}
    running: dict[str, str] = {}  # agent -> node, while a run of it is in flight here
    overlaps: list[str] = []
    queued = 0

    async def waker() -> None:
        nonlocal queued
        rng = random.Random(7)
        while queued < wakes:
            agent = rng.choice(agents)
            async with pg_db.claim() as session:
                if await runs.wake(session, agent, "assignment"):
                    queued += 1
            await asyncio.sleep(0)

    async def worker(name: str) -> None:
        db = dbs[name]
        owner = f"host-{name}:1"
        elsewhere = {a for a, ok in allowed.items() if name not in ok}
        mine: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()

        async def execute(run: runs.Claimed) -> None:
            if running.setdefault(run.agent_id, name) != name:
                overlaps.append(run.agent_id)
            await asyncio.sleep(random.random() / 100)
            running.pop(run.agent_id, None)
            async with db.claim() as session:
                assert await runs.finish(session, run.run_id, owner, RunStatus.SUCCEEDED, "ok")
            mine.discard(run.agent_id)

        while True:
            async with db.claim() as session:
                got = await runs.claim_due(
                    session, owner, lease, exclude=mine | elsewhere, limit=4
                )
            for run in got:
                claimed_by.setdefault(run.run_id, []).append(name)
                mine.add(run.agent_id)
                task = asyncio.create_task(execute(run))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if queued >= wakes and not got and not tasks:
                async with db.session() as session:
                    if not await runs.next_due_at(session, exclude=elsewhere, owner=owner):
                        return
            await asyncio.sleep(0.001)

    try:
        await asyncio.wait_for(
            asyncio.gather(waker(), *(worker(name) for name in names)), timeout=120
        )
    finally:
        for db in dbs.values():
            await db.dispose()
    assert queued == wakes
    async with pg_db.session() as session:
        rows = list((await session.execute(select(Run))).scalars())
    assert len(rows) == wakes and {r.status for r in rows} == {"succeeded"}
    assert sorted(claimed_by) == sorted(r.id for r in rows)
    assert all(len(by) == 1 for by in claimed_by.values()), "a run claimed twice"
    assert overlaps == [], "two runs of one agent at once"
    by_run = {r.id: r for r in rows}
    for run_id, (node,) in claimed_by.items():
        run = by_run[run_id]
        assert node in allowed[run.agent_id], (run.agent_id, node)
        assert run.lease_owner == f"host-{node}:1"
    assert {by[0] for by in claimed_by.values()} == set(names)  # every node worked


async def test_next_due_leaves_out_runs_this_node_cannot_claim(any_db: Database) -> None:
    async with any_db.claim() as session:
        await runs.wake(session, "coder", "assignment")
        await runs.wake(session, "ops", "assignment")
    async with any_db.claim() as session:
        [ops] = await runs.claim_due(
            session, "host-b:1", timedelta(minutes=1), exclude={"coder"}, limit=5
        )
    async with any_db.claim() as session:
        await runs.wake(session, "ops", "assignment")  # queued behind the one in flight
    async with any_db.session() as session:
        assert await runs.next_due_at(session) is not None
        # Node a may not run coder, and ops runs on node b: nothing for node a to wait for.
        assert await runs.next_due_at(session, exclude={"coder"}, owner="host-a:1") is None
        # Node b itself still sees its own agent's next run (as before nodes).
        assert await runs.next_due_at(session, exclude={"coder"}, owner="host-b:1")
    assert ops.agent_id == "ops"


async def _pending_deploy(db: Database, target: str) -> int:
    async with db.session() as session:
        run = DeployRun(target=target, status=DeployStatus.PENDING)
        session.add(run)
        await session.flush()
        return run.id


async def test_deploys_go_to_a_node_that_may_run_their_target_one_at_a_time(
    any_db: Database,
) -> None:
    web = await _pending_deploy(any_db, "web")
    docs = await _pending_deploy(any_db, "docs")
    async with any_db.claim() as session:
        taken = await deploys.claim_next(session, exclude={"web"}, node="mac")
        assert taken is not None and taken.id == docs and taken.node == "mac"
    async with any_db.claim() as session:
        assert await deploys.claim_next(session, exclude={"web"}, node="mac") is None
    async with any_db.claim() as session:
        taken = await deploys.claim_next(session, node="vps")
        assert taken is not None and taken.id == web
    # A node starting up reports only its own runs interrupted, not the other node's.
    async with any_db.claim() as session:
        assert await deploys.interrupt_running(session, node="mac") == [docs]
    async with any_db.session() as session:
        assert (await deploys.get(session, web)).status == DeployStatus.RUNNING  # type: ignore[union-attr]


async def _pending_command(db: Database, agent_id: str) -> int:
    async with db.session() as session:
        run = ExecRun(
            agent_id=agent_id, argv=["true"], cwd="workspace:", timeout_s=10, allowed_by="policy"
        )
        session.add(run)
        await session.flush()
        return run.id


async def test_commands_run_where_their_agent_runs_and_a_start_recovers_only_its_own(
    any_db: Database,
) -> None:
    mine = await _pending_command(any_db, "coder")
    theirs = await _pending_command(any_db, "writer")
    async with any_db.claim() as session:
        taken = await exec_runs.claim_next(session, exclude={"writer"}, node="mac")
        assert taken is not None and taken.id == mine and taken.node == "mac"
    async with any_db.claim() as session:
        assert await exec_runs.claim_next(session, exclude={"writer"}, node="mac") is None
    async with any_db.claim() as session:
        taken = await exec_runs.claim_next(session, node="vps")
        assert taken is not None and taken.id == theirs
    # A node starting up reports only its own commands interrupted, not the other node's.
    async with any_db.claim() as session:
        assert await exec_runs.interrupt_running(session, node="mac") == [mine]
    async with any_db.session() as session:
        still = await session.get(ExecRun, theirs)
        assert still is not None and still.status == ExecStatus.RUNNING


async def test_two_nodes_never_run_one_target_twice_at_once(pg_db: Database) -> None:
    for _ in range(6):
        await _pending_deploy(pg_db, "web")
    dbs = [Database(pg_db.url) for _ in range(3)]
    try:

        async def claim(i: int) -> int | None:
            async with dbs[i].claim() as session:
                run = await deploys.claim_next(session, node=f"n{i}")
                return None if run is None else run.id

        got = await asyncio.gather(*(claim(i % 3) for i in range(9)))
    finally:
        for db in dbs:
            await db.dispose()
    assert len([g for g in got if g is not None]) == 1


async def test_the_watchdog_names_a_silent_node_and_the_agents_that_wait_for_it(
    any_db: Database, config: Config
) -> None:
    await register(any_db, me("vps"))
    await register(any_db, me("mac", host="host-b"))
    stopped = me("old", host="host-c")
    await register(any_db, stopped)
    async with any_db.session() as session:
        await nodes.stop(session, stopped)
        await session.execute(update(Node).values(last_seen=utcnow() - timedelta(minutes=3)))
        assert await nodes.renew(session, me("vps"))
    [problem] = await silent_nodes(any_db, config)
    assert problem.key == "node:mac"
    assert problem.text.startswith("node mac (pid 100 on host-b) has not renewed for")
    # coder runs only on mac; ops may also run on vps, which is alive.
    assert problem.text.endswith("except those of coder, which wait for it")
    async with any_db.session() as session:
        assert await nodes.renew(session, me("mac", host="host-b"))
    assert await silent_nodes(any_db, config) == []


async def test_status_lines_show_role_last_seen_runs_in_flight_and_what_a_node_runs(
    any_db: Database, config: Config
) -> None:
    vps, mac = me("vps"), me("mac", host="host-b")
    async with any_db.session() as session:
        for who, role in ((vps, nodes.NodeRole.LEADER), (mac, nodes.NodeRole.STANDBY)):
            await nodes.register(
                session,
                who,
                role=role,
                may_run=nodes.MayRun.of(config, who.name),
                version="test",
                alive_within=ALIVE,
            )
    async with any_db.claim() as session:
        await runs.wake(session, "coder", "assignment")
        await runs.claim_due(session, mac.owner, timedelta(minutes=1), exclude=set(), limit=1)
    async with any_db.session() as session:
        rows = await nodes.all_nodes(session)
        in_flight = await nodes.runs_in_flight(session, rows)
    assert in_flight == {"mac": 1, "vps": 0}
    lines = node_lines(rows, in_flight, config, config.tz, utcnow(), ALIVE)
    assert lines[0] == "Nodes:"
    assert lines[1].startswith("• mac: standby, seen ")
    assert lines[1].endswith(
        ", 1 run in flight; may run all agents, checks anywhere, deploys docs"
    )
    assert lines[2].endswith(
        ", 0 runs in flight; may run agents hub, ops, all checks, all deploys"
    )
    later = utcnow() + timedelta(minutes=1)
    assert "SILENT since" in node_lines(rows, in_flight, config, config.tz, later, ALIVE)[1]
    assert node_lines([], {}, config, config.tz, later, ALIVE) == ["Nodes: none registered"]


async def test_the_runs_of_a_dead_node_are_retried_on_a_node_that_may_run_their_agent(
    any_db: Database,
) -> None:
    """Node b dies holding a run of `ops` (may run on a or b) and one of `coder` (only b):
    once their leases expire, ops is retried on node a; coder's retry waits for node b."""
    async with any_db.claim() as session:
        for agent in ("ops", "coder"):
            await tasks.create(
                session, title=f"{agent} work", assignee=agent, creator="person:1", max_retries=3
            )
    async with any_db.claim() as session:
        held = await runs.claim_due(
            session, "host-b:1", timedelta(seconds=30), exclude=set(), limit=5
        )
        for run in held:
            await runs.set_task(session, run.run_id, run.task_id or 0)
            await tasks.transition(session, run.task_id or 0, TaskStatus.IN_PROGRESS, actor="x")
    assert sorted(r.agent_id for r in held) == ["coder", "ops"]
    # Node a, which may not run coder, reaps the expired leases and requeues the tasks.
    later = utcnow() + timedelta(minutes=1)
    async with any_db.claim() as session:
        reaped = await runs.reap_expired(session, now=later)
        for dead in reaped:
            await runs.wake(session, dead.agent_id, "retry", task_id=dead.task_id)
    assert sorted(r.agent_id for r in reaped) == ["coder", "ops"]
    async with any_db.session() as session:  # no backoff for this test
        await session.execute(
            update(Run).where(Run.status == "queued").values(not_before=utcnow())
        )
    async with any_db.claim() as session:
        retried = await runs.claim_due(
            session, "host-a:1", timedelta(seconds=30), exclude={"coder"}, limit=5
        )
    assert [r.agent_id for r in retried] == ["ops"]
    async with any_db.session() as session:
        assert await runs.has_queued(session, "coder")  # waits for node b
