"""Three `fleet run` nodes (a, b, c) on one PostgreSQL database (issue 16, "must show"): 300
runs of 20 agents, with a scripted model; no run claimed twice, never two runs of one agent
at once, each run on a node its agent may run on; a check with `on = "b"` only ever runs on
node b, and one without `on` is probed by one node per interval."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

from sqlalchemy import select

from storage import nodes, runs
from storage.db import Database
from storage.models import Node, Run
from tests.anthropic_server import AnthropicServer, text
from tests.botapi_server import BotAPIServer
from tests.fleet import ANTHROPIC_KEY, OWNER, TOKEN, FleetProcess, ask, run_cli, write_config
from tests.pg import require_pg_url, temporary_database

NAMES = ("a", "b", "c")
AGENT_IDS = [f"ag{i:02d}" for i in range(20)]
# ag00..ag04 only on b; ag05..ag09 on a or c; the others anywhere.
ALLOWED = {
    agent: ("b",) if i < 5 else ("a", "c") if i < 10 else NAMES
    for i, agent in enumerate(AGENT_IDS)
}
RUNS = 300


def agents_toml() -> str:
    tables = []
    for i, agent in enumerate(AGENT_IDS):
        runs_on = "" if ALLOWED[agent] == NAMES else f"runs_on = {json.dumps(ALLOWED[agent])}\n"
        tables.append(
            f'[[agents]]\nid = "{agent}"\n'
            + ("hub = true\n" if i == 0 else 'reports_to = "ag00"\n')
            + f'workspace = "workspaces/{agent}"\nmodel = "claude-sonnet-4-6"\n'
            + runs_on
        )
    return "\n".join(tables)


def node_config(folder: Path, name: str, botapi: BotAPIServer, url: str, model: str) -> Path:
    probes = folder.parent / "probes"
    extra = f"""
[node]
name = "{name}"
leader_takeover = "3s"

[[checks]]
id = "pinned"
command = "echo {name} >> {probes / "pinned"}"
every = "1s"
on = "b"

[[checks]]
id = "anywhere"
command = "echo {name} >> {probes / "anywhere"}"
every = "2s"
"""
    path = write_config(
        folder,
        botapi.base_url,
        database_url=url,
        anthropic_base=model,
        agents=agents_toml(),
        extra=extra,
    )
    for agent in AGENT_IDS:
        # A standing check: every run of the agent calls the model (once: a text reply).
        (folder / "workspaces" / agent / "HEARTBEAT.md").write_text("- look around\n")
    return path


async def cli_status(config: Path) -> str:
    code, out = await run_cli("status", "--config", str(config))
    assert code == 0, out
    return out


async def test_three_nodes_run_300_runs_of_20_agents_each_where_it_may(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    require_pg_url()
    (tmp_path / "probes").mkdir()
    async with (
        AnthropicServer(
            valid_keys={ANTHROPIC_KEY}, default=text("all quiet", delay=0.02)
        ) as model,
        temporary_database("nodes") as url,
    ):
        fleets = {
            name: FleetProcess(node_config(tmp_path / name, name, botapi, url, model.base_url))
            for name in NAMES
        }
        started = time.monotonic()
        for name in NAMES:  # a first: it leads; b and c stand by
            await fleets[name].start()
            await fleets[name].wait_log("role: ", timeout=60)
        await botapi.wait_until_polling(timeout=30)
        await fleets["a"].wait_log("role: leader", timeout=30)

        db = Database(url)
        try:
            queued = 0
            while queued < RUNS:  # keep every agent busy until 300 runs were queued
                for agent in AGENT_IDS:
                    if queued == RUNS:
                        break
                    async with db.claim() as session:
                        queued += await runs.wake(session, agent, "assignment")
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 300
            while True:
                async with db.session() as session:
                    rows = list(
                        (
                            await session.execute(select(Run).where(Run.trigger == "assignment"))
                        ).scalars()
                    )
                if len(rows) == RUNS and all(r.status in runs.FINISHED for r in rows):
                    break
                assert time.monotonic() < deadline, [(r.id, r.status) for r in rows][-20:]
                await asyncio.sleep(0.5)
            async with db.session() as session:
                registered = {n.name: n for n in (await session.execute(select(Node))).scalars()}
        finally:
            await db.dispose()

        # Each run succeeded, once: one model call per run (a run done twice calls twice).
        assert {r.status for r in rows} == {"succeeded"}, {r.status for r in rows}
        assert len(model.requests) == RUNS
        # Never two runs of one agent at once.
        for agent in AGENT_IDS:
            mine = sorted((r for r in rows if r.agent_id == agent), key=lambda r: r.id)
            for before, after in itertools.pairwise(mine):
                assert before.finished_at is not None and after.started_at is not None
                assert after.started_at >= before.finished_at, (agent, before.id, after.id)
        # Each run on a node its agent may run on; every node did some.
        owner_node = {nodes.lease_owner(n.host, n.pid): name for name, n in registered.items()}
        ran_on = {r.id: owner_node[str(r.lease_owner)] for r in rows}
        for run in rows:
            assert ran_on[run.id] in ALLOWED[run.agent_id], (run.agent_id, ran_on[run.id])
        assert set(ran_on.values()) == set(NAMES)

        # A fourth process given a live node's name refuses to start and names the holder.
        twin = FleetProcess(node_config(tmp_path / "twin", "b", botapi, url, model.base_url))
        await twin.start()
        assert await twin.wait(timeout=120) == 3, twin.log
        assert "node name 'b' is held by a running fleet (pid" in twin.log, twin.log

        # /status (from the leader) and `fleet status` list the three nodes.
        status = await ask(botapi, OWNER, "/status")
        # One leader (a, unless a slow moment made it step down) and two standbys.
        for said in (status, await cli_status(fleets["c"].config)):
            lines = [line for line in said.splitlines() if line.startswith("• ")]
            assert [line.split(":")[0] for line in lines] == ["• a", "• b", "• c"], said
            roles = sorted(line.split(": ")[1].split(",")[0] for line in lines)
            assert roles == ["leader", "standby", "standby"], said
            assert "may run agents ag05, ag06" in lines[0], said
            assert "may run agents ag00, ag01" in lines[1] and "all checks" in lines[1], said

        for fleet in fleets.values():
            assert await fleet.stop() == 0, fleet.log
            assert "Traceback" not in fleet.log, fleet.log
            assert TOKEN not in fleet.log
        elapsed = time.monotonic() - started
    pinned = (tmp_path / "probes" / "pinned").read_text().split()
    assert pinned and set(pinned) == {"b"}, pinned
    anywhere = (tmp_path / "probes" / "anywhere").read_text().split()
    # One probe per 2 s slot (the first and the last slot may be partly in the window).
    assert anywhere and len(anywhere) <= elapsed / 2 + 2, (len(anywhere), elapsed)
