"""Runs per second with 1, 2 and 3 worker processes (`fleet run` nodes) on one PostgreSQL.

Run from the repository root, with a PostgreSQL server (FLEET_TEST_PG_URL, as the tests use;
`eval "$(bash .ci/postgres.sh)"` starts one)::

    python benchmarks/nodes.py [--agents 50] [--latency 0.2] [--seconds 20] [--json]

For each number of nodes (1, 2, 3) it creates a fresh database, starts that many real
`fleet run` processes (nodes `n1`, `n2`, `n3`; `n1` leads, the others stand by, all of them
run agents), with the local Bot API server and a local Messages API server whose every reply
takes `--latency` seconds (200 ms by default). The fleet has `--agents` agents (50), each with
a standing check in HEARTBEAT.md, so every run makes one model call. A feeder in this process
keeps every agent woken (a queued run per agent, through storage.runs.wake, as an assignment
does) for `--warmup` seconds, then for `--seconds`. Runs per second = runs that finished
in the measured window / its length, read from the runs table. Each node runs at most
`--concurrent` runs at once (`[runtime] max_concurrent_runs`, 4 by default), so with 200 ms per
model call one node's ceiling is about 20 runs/s: the ratios say how much of that ceiling
each added node adds (ideal: 2.0 and 3.0). The nodes' CPU per run and the load average before
each phase are printed too: all nodes share this machine's CPUs, so once they are busy, more
nodes cannot add runs (on separate machines each brings its own).

The exit code is 0 (a report), 1 when it could not measure.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import BenchmarkError, parse_args, parser_for, proc_cpu_seconds, run
from sqlalchemy import func, select

from storage import runs
from storage.db import Database
from storage.models import Run, utcnow
from storage.statuses import RunStatus
from tests.anthropic_server import AnthropicServer, text
from tests.botapi_server import BotAPIServer
from tests.fleet import ANTHROPIC_KEY, TOKEN, FleetProcess, write_config
from tests.pg import ENV, temporary_database


def agents_toml(count: int) -> str:
    tables = []
    for i in range(count):
        role = "hub = true\n" if i == 0 else 'reports_to = "ag000"\n'
        tables.append(
            f'[[agents]]\nid = "ag{i:03d}"\n{role}workspace = "workspaces/ag{i:03d}"\n'
            'model = "claude-sonnet-4-6"\n'
        )
    return "\n".join(tables)


def node_config(
    folder: Path, name: str, botapi: BotAPIServer, url: str, model: str, args: Any
) -> Path:
    extra = (
        f'[node]\nname = "{name}"\nleader_takeover = "3s"\n\n'
        f"[runtime]\nmax_concurrent_runs = {args.concurrent}\n"
    )
    path = write_config(
        folder,
        botapi.base_url,
        database_url=url,
        anthropic_base=model,
        agents=agents_toml(args.agents),
        extra=extra,
    )
    for i in range(args.agents):
        (folder / "workspaces" / f"ag{i:03d}" / "HEARTBEAT.md").write_text("- look around\n")
    return path


async def feed(db: Database, agents: list[str], stop: asyncio.Event) -> None:
    """Keep a run queued for every agent (a wake merges into a queued one)."""
    while not stop.is_set():
        for agent in agents:
            async with db.claim() as session:
                await runs.wake(session, agent, "assignment")
        await asyncio.sleep(0.02)


async def finished_between(db: Database, start: Any, end: Any) -> int:
    async with db.session() as session:
        found = await session.execute(
            select(func.count())
            .select_from(Run)
            .where(
                Run.status == RunStatus.SUCCEEDED,
                Run.finished_at >= start,
                Run.finished_at < end,
            )
        )
    return int(found.scalar_one())


async def one(workers: int, args: Any, botapi: BotAPIServer) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    async with (
        AnthropicServer(
            valid_keys={ANTHROPIC_KEY}, default=text("all quiet", delay=args.latency)
        ) as model,
        temporary_database(f"bench_nodes_{workers}") as url,
    ):
        with tempfile.TemporaryDirectory() as folder:
            fleets = [
                FleetProcess(
                    node_config(Path(folder) / f"n{i}", f"n{i}", botapi, url, model.base_url, args)
                )
                for i in range(1, workers + 1)
            ]
            db = Database(url)
            stop = asyncio.Event()
            feeder: asyncio.Task[None] | None = None
            try:
                for fleet in fleets:
                    await fleet.start()
                    await fleet.wait_log("role: ", timeout=120)
                agents = [f"ag{i:03d}" for i in range(args.agents)]
                feeder = asyncio.create_task(feed(db, agents, stop))
                await asyncio.sleep(args.warmup)
                pids = [fleet.proc.pid for fleet in fleets if fleet.proc is not None]
                cpu_before = sum(proc_cpu_seconds(pid) for pid in pids)
                start = utcnow()
                await asyncio.sleep(args.seconds)
                end = utcnow()
                cpu = sum(proc_cpu_seconds(pid) for pid in pids) - cpu_before
                done = await finished_between(db, start, end)
                for fleet in fleets:
                    if fleet.proc is not None and fleet.proc.returncode is not None:
                        raise BenchmarkError(f"a node exited:\n{fleet.log[-3000:]}")
            finally:
                stop.set()
                if feeder is not None:
                    await feeder
                for fleet in fleets:
                    await fleet.stop()
                await db.dispose()
    seconds = (end - start) / timedelta(seconds=1)
    return {
        "workers": workers,
        "runs": done,
        "seconds": seconds,
        "runs_per_s": done / seconds,
        # CPU of the nodes per run: on a small machine the CPU, not the model, is the limit
        "cpu_ms_per_run": cpu * 1000 / done if done else float("nan"),
        "load_before": load_before,
    }


async def benchmark(args: Any) -> dict[str, Any]:
    if not os.environ.get(ENV):
        raise BenchmarkError(f"needs a PostgreSQL server: set {ENV} (see tests/pg.py)")
    results = []
    async with BotAPIServer(TOKEN) as botapi:
        for workers in (1, 2, 3):
            started = time.monotonic()
            results.append(await one(workers, args, botapi))
            results[-1]["wall_s"] = time.monotonic() - started
    base = results[0]["runs_per_s"] or float("nan")
    for result in results:
        result["ratio"] = result["runs_per_s"] / base
    return {
        "agents": args.agents,
        "latency_s": args.latency,
        "concurrent": args.concurrent,
        "cpus": os.cpu_count(),
        "results": results,
    }


def print_table(found: dict[str, Any]) -> None:
    print(
        f"{found['agents']} agents, model latency {found['latency_s'] * 1000:.0f} ms, "
        f"{found['concurrent']} runs at once per node, {found['cpus']} CPUs"
    )
    print(f"{'nodes':>5} {'runs':>6} {'runs/s':>8} {'ratio':>6} {'CPU ms/run':>11} {'load':>5}")
    for r in found["results"]:
        print(
            f"{r['workers']:>5} {r['runs']:>6} {r['runs_per_s']:>8.2f} {r['ratio']:>6.2f} "
            f"{r['cpu_ms_per_run']:>11.0f} {r['load_before']:>5.1f}"
        )
    ratios = {r["workers"]: r["ratio"] for r in found["results"]}
    print(f"scaling: 2/1 = {ratios[2]:.2f}, 3/1 = {ratios[3]:.2f} (ideal 2.00, 3.00)")


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__ or "")
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model reply")
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--concurrent", type=int, default=4, help="max_concurrent_runs")
    parser.add_argument("--json", action="store_true")
    args = parse_args(parser, argv)
    return run(benchmark(args), print_table, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
