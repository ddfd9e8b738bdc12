"""Latency of Mission Control's Fleet and Tasks pages on a big fleet while the bot is busy.

Run from the repository root::

    python benchmarks/web.py [--agents 50] [--tasks 100000] [--rate 50] [--duration 10] [--json]

A real `fleet run` with `[web] listen` on a SQLite database seeded with `--agents` agents and
`--tasks` tasks (spread over the statuses and agents, each with a creation event) polls the
in-process local Bot API server. For `--duration` seconds the people send `/status` at
`--rate` updates/s while this process requests `/` (Fleet) and `/tasks` (the board) in turn
with a session cookie, one request at a time, and `/tasks?status=done&before=<middle id>` (a
deep page). Reported: p50 / p95 / max per page, and how many updates the bot answered. Target:
p95 < 150 ms for Fleet and Tasks. The exit code is 0 whether the target passes or not (it is a
report); 1 when the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from common import (  # before the project's imports: it puts the root on sys.path
    BenchmarkError,
    machine,
    parse_args,
    parser_for,
    percentile,
    run,
    verdict,
)

from bot.web.auth import SESSION, Signer
from bot.web.sessions import COOKIE
from storage import tasks
from storage.db import Database
from tests.botapi_server import BotAPIServer
from tests.fleet import OPERATOR, OWNER, TOKEN, VIEWER, FleetProcess, fleet_env, write_config
from tests.webtools import ALERT_TOKEN, free_port, web_extra

P95_TARGET_MS = 150.0
USERS = (OWNER, OPERATOR, VIEWER)


def agents_toml(count: int) -> str:
    parts = [
        '[[agents]]\nid = "hub"\nhub = true\nworkspace = "workspaces/hub"\n'
        'model = "claude-haiku-4-5"\nbudget_usd_month = 30\n'
    ]
    for i in range(1, count):
        parts.append(
            f'[[agents]]\nid = "agent{i}"\nreports_to = "hub"\n'
            f'workspace = "workspaces/agent{i}"\nmodel = "claude-haiku-4-5"\n'
            "budget_usd_month = 20\n"
        )
    return "\n".join(parts)


async def seed(folder: Path, agents: int, count: int) -> None:
    db = Database(f"sqlite+aiosqlite:///{folder / 'fleet.db'}")
    await db.migrate()
    await db.dispose()
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    statuses = tasks.STATUSES
    with sqlite3.connect(folder / "fleet.db") as conn:
        rows = [
            (
                f"task {i}",
                "",
                "hub" if i % agents == 0 else f"agent{i % agents}",
                "person:1001",
                2,
                statuses[i % len(statuses)],
                0,
                3,
                0,
                now,
                now,
            )
            for i in range(1, count + 1)
        ]
        conn.executemany(
            "INSERT INTO tasks (title, body, assignee, creator, priority, status, retries,"
            " max_retries, idle_runs, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(
            "INSERT INTO task_events (task_id, kind, actor, to_status, body, created_at)"
            " SELECT id, 'created', creator, status, '', created_at FROM tasks"
        )


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        async with BotAPIServer(TOKEN) as server:
            port = free_port()
            config = write_config(
                folder, server.base_url, agents=agents_toml(args.agents), extra=web_extra(port)
            )
            started = time.monotonic()
            await seed(folder, args.agents, args.tasks)
            seeded = time.monotonic() - started
            fleet = FleetProcess(config, env=fleet_env(ALERT_TOKEN=ALERT_TOKEN))
            await fleet.start()
            try:
                await server.wait_until_polling(timeout=60)
                await fleet.wait_log("web: serving", timeout=60)
                with sqlite3.connect(folder / "fleet.db") as conn:
                    [(key,)] = conn.execute("SELECT value FROM web_keys").fetchall()
                cookie = Signer(key).issue(SESSION, OWNER, 3600, role="owner")
                return await measure(args, server, port, cookie, seeded)
            finally:
                await fleet.stop()
                if "Traceback" in fleet.log:
                    raise BenchmarkError(f"fleet run failed:\n{fleet.log[-3000:]}")


async def measure(
    args: argparse.Namespace, server: BotAPIServer, port: int, cookie: str, seeded: float
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    pages = {
        "fleet": "/",
        "tasks": "/tasks",
        "deep": f"/tasks?status=done&before={args.tasks // 2}",
    }
    times: dict[str, list[float]] = {name: [] for name in pages}
    before = len(server.calls_of("sendMessage"))
    stop = asyncio.Event()

    async def load() -> int:
        pushed = 0
        start = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - start) * args.rate)
            while pushed < due:
                server.push_message(USERS[pushed % len(USERS)], "/status")
                pushed += 1
            await asyncio.sleep(0.005)
        return pushed

    async with aiohttp.ClientSession(cookies={COOKIE: cookie}) as session:
        for path in pages.values():  # warm-up
            async with session.get(base + path) as response:
                if response.status != 200:
                    raise BenchmarkError(f"{path} answered {response.status}")
                await response.read()
        loader = asyncio.create_task(load())
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            for name, path in pages.items():
                t0 = time.perf_counter()
                async with session.get(base + path) as response:
                    await response.read()
                    if response.status != 200:
                        raise BenchmarkError(f"{path} answered {response.status}")
                times[name].append((time.perf_counter() - t0) * 1000)
        stop.set()
        pushed = await loader
    await asyncio.sleep(2)
    answered = len(server.calls_of("sendMessage")) - before
    results: dict[str, Any] = {
        "agents": args.agents,
        "tasks": args.tasks,
        "seed_seconds": round(seeded, 1),
        "updates_pushed": pushed,
        "updates_answered": answered,
        "machine": machine(args.load_before),
        "pages": {},
    }
    for name, values in times.items():
        p95 = percentile(values, 95)
        results["pages"][name] = {
            "requests": len(values),
            "p50_ms": round(percentile(values, 50), 1),
            "p95_ms": round(p95, 1),
            "max_ms": round(max(values), 1),
            "pass": p95 < P95_TARGET_MS if name != "deep" else None,
        }
    return results


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{results['agents']} agents, {results['tasks']} tasks (seeded in "
        f"{results['seed_seconds']} s); bot answered {results['updates_answered']} of "
        f"{results['updates_pushed']} updates meanwhile"
    )
    for name, page in results["pages"].items():
        mark = verdict(page["pass"]) if page["pass"] is not None else "info"
        print(
            f"{mark} {name:6} {page['requests']:4} requests  p50 {page['p50_ms']:7.1f} ms  "
            f"p95 {page['p95_ms']:7.1f} ms  max {page['max_ms']:7.1f} ms  "
            f"(target p95 < {P95_TARGET_MS:.0f} ms)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__)
    parser.add_argument("--agents", type=int, default=50, help="agents in the fleet (50)")
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks seeded (100000)")
    parser.add_argument("--rate", type=float, default=50.0, help="updates/s meanwhile (50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured (10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parse_args(parser, argv)
    if args.agents < 1 or args.tasks < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--agents, --tasks, --rate and --duration must be positive")
    args.load_before = os.getloadavg()[0]
    return run(benchmark(args), print_table, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
