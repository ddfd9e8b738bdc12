"""Cost of idle agent heartbeats, and how fast an assignment wakes its agent.

Run from the repository root::

    python benchmarks/heartbeats.py [--agents 200] [--rounds 10] [--json]

The fleet is one hub and N-1 specialists that report to it (default 200 agents), each with
its own workspace (copied from the `fleet init` templates: a HEARTBEAT.md without standing
checks, so an idle heartbeat must not call a model). Phases, in one run:

1. in-process: the real Config (`load_config` on a written TOML), `Database` on a temporary
   SQLite file, `Gateway` and `Runtime`. 5 agents get an open task; then
   `await runtime.heartbeat(agent)` is called for each idle agent, `--rounds` times. CPU per
   idle heartbeat = `time.process_time()` delta (every thread of this process, so aiosqlite's
   worker threads count) / heartbeats. The busy agents' heartbeats (a wake that merges into
   the queued run) are measured the same way. No run worker is started: no model is called.
2. baseline: the cheapest way to record "this heartbeat was skipped" with the same Database:
   one Core INSERT of a runs row in its own transaction. Reported as heartbeat / baseline,
   next to a breakdown of the heartbeat's steps measured one by one.
3. APScheduler: the same heartbeats through `bot.scheduler.Scheduler.agent_heartbeat`, every
   agent on a 1-second interval trigger, for `--scheduler-seconds`. CPU per heartbeat = the
   whole process's CPU time / heartbeats completed, so APScheduler's own cost is included.
   All triggers are created together, so every second the 200 heartbeats fire at once (as
   `fleet run` does every minute with `heartbeat = "1m"`); the time to clear such a burst is
   reported too.
4. wake on assignment: the real `fleet run` with the same 200 agents (`heartbeat = "1m"`),
   the local Bot API server and a local Anthropic Messages API that answers every request
   with "ok" at once. `/assign <agent> <text>` is pushed from the operator at `--rate` per
   second for `--seconds`, each to another specialist. Latency = the time the Anthropic
   server received the first /v1/messages request for that agent (found by the system
   prompt, `... (agent "<id>")`) minus the push time. The `/assign` reply (sendMessage)
   latency is reported as context, and the wake is split into stages with the times the run
   row holds (queued_at: the wake was written; started_at: the worker claimed it). By default
   the pushes start `--assign-start` (50) seconds after the process began polling, so the
   window contains the first heartbeat burst (every agent is due 60 s after start). A burst
   is a stretch in which scheduled heartbeats (runs rows, trigger "schedule") of at least
   10 % of the agents were queued within one second; pushes from 0.5 s before a burst to 2 s
   after it are reported separately from the others.

The exit code is 0 whether the targets pass or not (it is a report); 1 when the benchmark
itself failed (a process died, requests never came, a sanity check failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (  # before the project's imports: it puts the root on sys.path
    ROOT,
    BenchmarkError,
    Cost,
    add_py_spy,
    cancel_on_sigterm,
    check_alive,
    log_tail,
    machine,
    measure,
    parse_args,
    parser_for,
    percentile,
    proc_cpu_seconds,
    proc_memory_mb,
    py_spy_record,
    run,
    stop_process,
    terminate,
    test_keys_in_env,
    verdict,
)
from sqlalchemy import func, insert, select

from agents import workspace
from agents.gateway import Gateway
from agents.runtime import Runtime
from bot.config import load_config
from bot.scheduler import Scheduler
from storage import agents as agent_state
from storage import runs, tasks
from storage.db import Database
from storage.models import AgentState, Run, utcnow
from storage.statuses import RunStatus
from tests.anthropic_server import AnthropicServer, text
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import OPERATOR, TOKEN, FleetProcess, write_config

MODEL = "claude-sonnet-4-6"
TEMPLATES = ROOT / "bot" / "templates" / "workspaces"
BUSY = 5
NO_SERVER = "http://127.0.0.1:9"  # the in-process phases reach neither Telegram nor a model

CPU_TARGET_MS = 2.0
P99_TARGET_MS = 200.0
START_TIMEOUT = 60.0
MATCH_TIMEOUT = 60.0
BURST_WINDOW = 1.0  # a burst: at least BURST_SHARE of the agents' heartbeats within 1 s
BURST_SHARE = 0.1
BURST_LEAD = 0.5  # pushes from this long before a burst's first heartbeat ...
BURST_TAIL = 2.0  # ... to this long after its last one count as "during a burst"

_AGENT_IN_PROMPT = re.compile(r'\(agent "([a-z0-9_-]+)"\)|the agent "([a-z0-9_-]+)"')
_ASSIGN_REPLY = re.compile(r"^Task #\d+ for ([a-z0-9_-]+):")


# ---- the fleet ---------------------------------------------------------------------------------


def agent_ids(count: int) -> list[str]:
    """The hub, then the specialists s001, s002, ..."""
    return ["hub", *(f"s{i:03d}" for i in range(1, count))]


def agents_toml(count: int, heartbeat: str) -> str:
    """[[agents]] tables: one hub and `count - 1` specialists reporting to it."""
    blocks = [
        f"""[[agents]]
id = "hub"
title = "Hub"
hub = true
workspace = "workspaces/hub"
model = "{MODEL}"
heartbeat = "{heartbeat}"
authority = ["assign", "comment", "subtask"]
"""
    ]
    for agent in agent_ids(count)[1:]:
        blocks.append(
            f"""[[agents]]
id = "{agent}"
title = "Specialist {agent}"
reports_to = "hub"
workspace = "workspaces/{agent}"
model = "{MODEL}"
heartbeat = "{heartbeat}"
authority = ["comment"]
"""
        )
    return "\n".join(blocks)


def fill_workspaces(folder: Path, count: int) -> None:
    """Each agent gets the `fleet init` template files (HEARTBEAT.md lists no checks)."""
    for agent in agent_ids(count):
        template = TEMPLATES / ("hub" if agent == "hub" else "coder")
        target = folder / "workspaces" / agent
        target.mkdir(parents=True, exist_ok=True)
        for source in template.iterdir():
            shutil.copyfile(source, target / source.name)


def write_fleet(folder: Path, count: int, heartbeat: str, **kwargs: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, agents=agents_toml(count, heartbeat), **kwargs)
    fill_workspaces(folder, count)
    return config


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else float("nan"),
    }


# ---- phases 1 and 2: in-process heartbeats and the baseline ------------------------------------


@dataclass
class InProcessResult:
    agents: int
    idle_agents: int
    busy_agents: int
    rounds: int
    idle: Cost
    busy: Cost
    baseline: Cost
    steps: list[Cost] = field(default_factory=list)
    scheduler: dict[str, Any] = field(default_factory=dict)


async def count_runs(db: Database, status: str) -> int:
    async with db.session() as session:
        stmt = select(func.count()).select_from(Run).where(Run.status == status)
        return int((await session.execute(stmt)).scalar_one())


async def in_process(args: argparse.Namespace, folder: Path) -> InProcessResult:
    config_path = write_fleet(folder, args.agents, "1m", api_base=NO_SERVER)
    test_keys_in_env()
    config = load_config(config_path)
    db = Database(config.database.url)
    gateway = Gateway(config, db)
    try:
        await db.migrate()
        runtime = Runtime(config, db, gateway)
        ids = [agent.id for agent in config.agents]
        busy = ids[1 : 1 + BUSY]
        idle = [a for a in ids if a not in busy]
        async with db.claim() as session:
            for agent in busy:
                await tasks.create(
                    session,
                    title=f"open task of {agent}",
                    assignee=agent,
                    creator=f"person:{OPERATOR}",
                    max_retries=3,
                )
        for agent in ids:  # warm-up: first queries compile statements, first reads hit disk
            await runtime.heartbeat(agent)
        skipped_before = await count_runs(db, RunStatus.SKIPPED)

        rounds = args.rounds
        idle_cost = await measure(
            "heartbeat, idle agent",
            len(idle) * rounds,
            lambda i: runtime.heartbeat(idle[i % len(idle)]),
        )
        busy_cost = await measure(
            "heartbeat, agent with an open task (wake merges)",
            len(idle) * rounds // 4,
            lambda i: runtime.heartbeat(busy[i % len(busy)]),
        )
        skipped = await count_runs(db, RunStatus.SKIPPED) - skipped_before
        if skipped != idle_cost.count:
            raise BenchmarkError(f"{idle_cost.count} idle heartbeats recorded {skipped} rows")
        queued = await count_runs(db, RunStatus.QUEUED)
        if queued != len(busy):
            raise BenchmarkError(f"{queued} queued runs for {len(busy)} busy agents")
        if gateway.failover.started:  # the sanity check this benchmark is about
            raise BenchmarkError("a heartbeat created a model client")

        n = idle_cost.count
        baseline = await measure(
            "floor: Core INSERT of a runs row in a transaction", n, _floor(db)
        )
        steps = await breakdown(runtime, db, idle, n)
        result = InProcessResult(
            agents=len(ids),
            idle_agents=len(idle),
            busy_agents=len(busy),
            rounds=rounds,
            idle=idle_cost,
            busy=busy_cost,
            baseline=baseline,
            steps=steps,
        )
        if args.scheduler_seconds > 0:
            result.scheduler = await through_apscheduler(
                runtime, db, ids, busy, args.scheduler_seconds
            )
        return result
    finally:
        await gateway.close()
        await db.dispose()


def _floor(db: Database) -> Callable[[int], Awaitable[None]]:
    async def op(i: int) -> None:
        now = utcnow()
        async with db.engine.begin() as conn:
            await conn.execute(
                insert(Run).values(
                    agent_id="floor",
                    trigger="schedule",
                    status=RunStatus.SKIPPED,
                    not_before=now,
                    queued_at=now,
                    started_at=now,
                    finished_at=now,
                    outcome="nothing to do",
                    changed_anything=False,
                )
            )

    return op


async def breakdown(runtime: Runtime, db: Database, idle: list[str], n: int) -> list[Cost]:
    """The steps of an idle heartbeat, each measured on its own (n times)."""

    def agent(i: int) -> str:
        return idle[i % len(idle)]

    async def empty_session(i: int) -> None:
        async with db.session():
            pass

    async def empty_claim(i: int) -> None:
        async with db.claim():
            pass

    async def claim_get_state(i: int) -> None:
        async with db.claim() as session:
            await session.get(AgentState, agent(i))

    async def claim_has_work(i: int) -> None:
        async with db.claim() as session:
            await agent_state.has_work(session, agent(i))

    async def claim_record(i: int) -> None:
        async with db.claim() as session:
            await runs.record_skipped(session, agent(i), "schedule", "nothing to do")

    async def heartbeat_file(i: int) -> None:
        config = runtime.org.get(agent(i))
        assert config is not None
        workspace.heartbeat_has_tasks(runtime.workspace_of(config))

    return [
        await measure("empty db.session() transaction", n, empty_session),
        await measure("empty db.claim() (BEGIN IMMEDIATE) transaction", n, empty_claim),
        await measure("claim() + session.get(AgentState)", n, claim_get_state),
        await measure("claim() + agent_state.has_work (2 queries)", n, claim_has_work),
        await measure("claim() + runs.record_skipped (ORM insert)", n, claim_record),
        await measure("workspace.heartbeat_has_tasks (HEARTBEAT.md)", n, heartbeat_file),
    ]


class _SchedulerLog(logging.Handler):
    """Counts APScheduler's warnings: missed runs and runs skipped while one is running."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.missed = 0
        self.overlapping = 0
        self.other = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "was missed by" in message:
            self.missed += 1
        elif "maximum number of running instances" in message:
            self.overlapping += 1
        else:
            self.other += 1


async def through_apscheduler(
    runtime: Runtime, db: Database, ids: list[str], busy: list[str], seconds: float
) -> dict[str, Any]:
    """Every agent's heartbeat on a 1-second IntervalTrigger, fired by APScheduler."""
    spans: list[tuple[float, float]] = []
    active = busy_done = 0
    drained = asyncio.Event()  # set while no heartbeat is in flight
    drained.set()

    async def counted(agent_id: str) -> None:
        nonlocal active, busy_done
        active += 1
        drained.clear()
        start = time.monotonic()
        try:
            await runtime.heartbeat(agent_id)
            spans.append((start, time.monotonic()))
            busy_done += agent_id in busy
        finally:
            active -= 1
            if not active:
                drained.set()

    watcher = _SchedulerLog()
    aps_log = logging.getLogger("apscheduler")
    aps_log.addHandler(watcher)
    aps_log.propagate = False
    scheduler = Scheduler(db)
    for agent in runtime.config.agents:
        scheduler.agent_heartbeat(
            agent.id,
            functools.partial(counted, agent.id),
            every=1,
            cron=None,
            tz=runtime.config.tz,
        )
    skipped_before = await count_runs(db, RunStatus.SKIPPED)
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    scheduler.start()
    try:
        await asyncio.sleep(seconds)
        # Fire no more, let the heartbeats in flight finish (shutdown would cancel them).
        scheduler.scheduler.pause()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), 30)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await scheduler.shutdown(0)
    aps_log.removeHandler(watcher)
    aps_log.propagate = True
    skipped = await count_runs(db, RunStatus.SKIPPED) - skipped_before
    done = len(spans)
    if done == 0:
        raise BenchmarkError("APScheduler fired no heartbeat")
    if skipped != done - busy_done:
        raise BenchmarkError(
            f"{done - busy_done} idle heartbeats through APScheduler recorded {skipped} rows"
        )

    # Bursts: heartbeats that started within half a second of each other fired together.
    bursts: list[list[tuple[float, float]]] = []
    for span in sorted(spans):
        if bursts and span[0] - bursts[-1][0][0] < 0.5:
            bursts[-1].append(span)
        else:
            bursts.append([span])
    clear_ms = [(max(e for _, e in b) - b[0][0]) * 1000 for b in bursts]
    per_hb_ms = [(e - s) * 1000 for s, e in spans]
    return {
        "interval_s": 1,
        "seconds": seconds,
        "heartbeats": done,
        "expected": len(ids) * int(seconds),
        "skipped_rows": skipped,
        "idle_share": skipped / done,
        "cpu_ms_per_heartbeat": cpu * 1000 / done,
        "cpu_pct_of_one_core": cpu * 100 / wall,
        "wall_seconds": wall,
        "bursts": len(bursts),
        "burst_clear_ms_p50": percentile(clear_ms, 50),
        "burst_clear_ms_max": max(clear_ms),
        "heartbeat_wall_ms_p50": percentile(per_hb_ms, 50),
        "heartbeat_wall_ms_p99": percentile(per_hb_ms, 99),
        "missed_warnings": watcher.missed,
        "overlap_warnings": watcher.overlapping,
        "other_warnings": watcher.other,
    }


# ---- phase 4: wake on assignment, through the real `fleet run` ---------------------------------


@dataclass
class Push:
    seq: int
    agent: str
    at: float


@dataclass
class AssignResult:
    pushes: int
    rate_target: float
    rate_achieved: float
    start_offset_s: float  # when the first push was made, after polling began
    wake: dict[str, float]
    reply: dict[str, float]
    wake_in_burst: dict[str, float]
    wake_outside_burst: dict[str, float]
    # The wake's stages, from the run row (times written by fleet run, to the millisecond):
    stage_push_to_queued: dict[str, float]  # update handled, wake row written
    stage_queued_to_claimed: dict[str, float]  # waiting for the run worker
    stage_claimed_to_request: dict[str, float]  # run set-up until the model request
    bursts: list[dict[str, float]]
    model_requests: int
    fleet_cpu_s: float
    fleet_peak_rss_mb: float
    worst: list[dict[str, Any]]
    timeline: list[dict[str, Any]]  # every push: when, which agent, its latencies


def prompt_agent(body: dict[str, Any]) -> str | None:
    system = body.get("system")
    if isinstance(system, list):
        system = " ".join(b.get("text", "") for b in system if isinstance(b, dict))
    if not isinstance(system, str):
        return None
    match = _AGENT_IN_PROMPT.search(system[:400])
    return (match.group(1) or match.group(2)) if match else None


def first_after(times: list[float], at: float) -> float | None:
    return next((t for t in times if t >= at), None)


def fleet_alive(fleet: FleetProcess) -> None:
    check_alive(fleet.proc, "fleet run", fleet.log_path)


async def stop_fleet(fleet: FleetProcess) -> int | None:
    return await stop_process(fleet.proc, "fleet run")


class Requests:
    """Arrival times of /v1/messages requests, per agent (from the system prompt)."""

    def __init__(self, server: AnthropicServer) -> None:
        self.server = server
        self.pos = 0
        self.by_agent: dict[str, list[float]] = {}

    def scan(self) -> None:
        requests = self.server.requests
        while self.pos < len(requests):
            request = requests[self.pos]
            self.pos += 1
            agent = prompt_agent(request.body)
            if agent is not None:
                self.by_agent.setdefault(agent, []).append(request.at)


class Replies:
    """The operator's `/assign` replies (sendMessage "Task #N for <agent>: ..."), per agent."""

    def __init__(self, server: BotAPIServer) -> None:
        self.server = server
        self.pos = 0
        self.by_agent: dict[str, list[Call]] = {}

    def scan(self) -> None:
        calls = self.server.calls
        while self.pos < len(calls):
            call = calls[self.pos]
            self.pos += 1
            if call.method != "sendMessage" or call.params.get("chat_id") != OPERATOR:
                continue
            match = _ASSIGN_REPLY.match(str(call.params.get("text", "")))
            if match:
                self.by_agent.setdefault(match.group(1), []).append(call)


async def wait_matched(
    pushes: list[Push], requests: Requests, replies: Replies, fleet: FleetProcess
) -> None:
    deadline = time.monotonic() + MATCH_TIMEOUT
    while True:
        requests.scan()
        replies.scan()
        missing = [
            p
            for p in pushes
            if first_after(requests.by_agent.get(p.agent, []), p.at) is None
            or first_after([c.at for c in replies.by_agent.get(p.agent, [])], p.at) is None
        ]
        if not missing:
            return
        fleet_alive(fleet)
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"{len(missing)} of {len(pushes)} assignments got no model request or no reply "
                f"in {MATCH_TIMEOUT:.0f} s (first: {missing[0].agent})\n{log_tail(fleet.log_path)}"
            )
        await asyncio.sleep(0.02)


def _mono(value: str, mono_minus_wall: float) -> float:
    """A UTC time as SQLite stores it, on this process's monotonic clock."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp() + mono_minus_wall


def heartbeat_bursts(config: Path, mono_minus_wall: float, least: int) -> list[dict[str, float]]:
    """Bursts of scheduled heartbeats (runs rows, trigger "schedule"): stretches where at
    least `least` of them were queued within BURST_WINDOW seconds. Times are monotonic."""
    with sqlite3.connect(config.parent / "fleet.db") as db:
        rows = db.execute(
            "SELECT queued_at, status FROM runs WHERE trigger = 'schedule' ORDER BY queued_at"
        ).fetchall()
    beats = [(_mono(queued_at, mono_minus_wall), status) for queued_at, status in rows]
    spans: list[list[float]] = []
    first = 0
    for i, (at, _) in enumerate(beats):
        while beats[first][0] < at - BURST_WINDOW:
            first += 1
        if i - first + 1 < least:
            continue
        if spans and beats[first][0] <= spans[-1][1]:
            spans[-1][1] = at
        else:
            spans.append([beats[first][0], at])
    return [
        {
            "start": start,
            "end": end,
            "heartbeats": sum(start <= at <= end for at, _ in beats),
            "woke": sum(
                start <= at <= end and status != RunStatus.SKIPPED for at, status in beats
            ),
        }
        for start, end in spans
    ]


def assignment_runs(config: Path, mono_minus_wall: float) -> dict[int, tuple[float, float]]:
    """(queued, started) of the run each measured /assign woke, by push number."""
    with sqlite3.connect(config.parent / "fleet.db") as db:
        rows = db.execute(
            "SELECT t.title, r.queued_at, r.started_at FROM runs r JOIN tasks t "
            "ON r.task_id = t.id WHERE r.trigger = 'assignment' AND r.started_at IS NOT NULL "
            "AND t.title LIKE 'benchmark task %'"
        ).fetchall()
    return {
        int(title.rsplit(" ", 1)[1]): (
            _mono(queued, mono_minus_wall),
            _mono(started, mono_minus_wall),
        )
        for title, queued, started in rows
    }


async def assignment_latency(
    args: argparse.Namespace, tmp: Path, stack: contextlib.AsyncExitStack
) -> AssignResult:
    botapi = await stack.enter_async_context(BotAPIServer(TOKEN))
    model = await stack.enter_async_context(AnthropicServer(default=text("ok")))

    folder = tmp / "fleet"
    config = write_fleet(
        folder, args.agents, "1m", api_base=botapi.base_url, anthropic_base=model.base_url
    )
    fleet = FleetProcess(config)
    await fleet.start()
    stack.push_async_callback(stop_fleet, fleet)
    try:
        await botapi.wait_until_polling(START_TIMEOUT)
    except AssertionError as err:
        fleet_alive(fleet)
        raise BenchmarkError(
            f"fleet run did not poll: {err}\n{log_tail(fleet.log_path)}"
        ) from None
    # The heartbeat triggers were made just before polling began: their first burst is due
    # about one interval (60 s) from now.
    started = time.monotonic()

    requests, replies = Requests(model), Replies(botapi)
    ids = agent_ids(args.agents)[1:]
    # Warm-up: the first run of the process creates the model client, the first /assign
    # compiles the statements; use agents from the end of the list, not measured below.
    warm = [Push(-1 - i, agent, time.monotonic()) for i, agent in enumerate(ids[-3:])]
    for p in warm:
        p.at = time.monotonic()
        botapi.push_message(OPERATOR, f"/assign {p.agent} warm-up")
    await wait_matched(warm, requests, replies, fleet)

    count = max(1, round(args.rate * args.seconds))
    begin = max(time.monotonic(), started + args.assign_start)
    await asyncio.sleep(begin - time.monotonic())
    assert fleet.proc is not None
    if args.py_spy:
        # Waits too: a wake that is slow may be slow waiting, not computing.
        spy = await py_spy_record(fleet.proc.pid, args.py_spy, "--idle", "--threads")
        stack.callback(terminate, spy)
    cpu_before = proc_cpu_seconds(fleet.proc.pid)
    pushes: list[Push] = []
    for i in range(count):
        delay = begin + i / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        fleet_alive(fleet)
        agent = ids[i]  # each measured agent once: its first request after the push is ours
        at = time.monotonic()
        botapi.push_message(OPERATOR, f"/assign {agent} benchmark task {i}")
        pushes.append(Push(i, agent, at))
    await wait_matched(pushes, requests, replies, fleet)
    if args.py_spy:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        await spy.wait()
    cpu = proc_cpu_seconds(fleet.proc.pid) - cpu_before
    rss = proc_memory_mb(fleet.proc.pid).get("VmHWM", float("nan"))
    mono_minus_wall = time.monotonic() - time.time()
    code = await stop_fleet(fleet)
    if code != 0:
        raise BenchmarkError(
            f"fleet run stopped with exit code {code}:\n{log_tail(fleet.log_path)}"
        )
    if botapi.errors:
        raise BenchmarkError(f"the local Bot API server failed: {botapi.errors!r}")
    if model.unscripted:
        raise BenchmarkError(f"{len(model.unscripted)} model requests were refused")

    bursts = heartbeat_bursts(config, mono_minus_wall, max(2, round(BURST_SHARE * args.agents)))
    stages = assignment_runs(config, mono_minus_wall)
    to_queued: list[float] = []
    queue_wait: list[float] = []
    to_request: list[float] = []
    wake: list[float] = []
    reply: list[float] = []
    in_burst: list[float] = []
    outside: list[float] = []
    rows: list[dict[str, Any]] = []
    for p in pushes:
        woke = first_after(requests.by_agent[p.agent], p.at)
        answered = first_after([c.at for c in replies.by_agent[p.agent]], p.at)
        assert woke is not None and answered is not None
        ms = (woke - p.at) * 1000
        wake.append(ms)
        reply.append((answered - p.at) * 1000)
        during = any(b["start"] - BURST_LEAD <= p.at <= b["end"] + BURST_TAIL for b in bursts)
        (in_burst if during else outside).append(ms)
        if p.seq in stages:
            queued, claimed = stages[p.seq]
            to_queued.append((queued - p.at) * 1000)
            queue_wait.append((claimed - queued) * 1000)
            to_request.append((woke - claimed) * 1000)
        rows.append(
            {
                "agent": p.agent,
                "pushed_s": round(p.at - started, 3),
                "wake_ms": round(ms, 1),
                "reply_ms": round(reply[-1], 1),
                "burst": during,
            }
        )
    elapsed = pushes[-1].at - pushes[0].at
    return AssignResult(
        pushes=count,
        rate_target=args.rate,
        rate_achieved=(count - 1) / elapsed if elapsed > 0 else float("nan"),
        start_offset_s=pushes[0].at - started,
        wake=summary(wake),
        reply=summary(reply),
        wake_in_burst=summary(in_burst),
        wake_outside_burst=summary(outside),
        stage_push_to_queued=summary(to_queued),
        stage_queued_to_claimed=summary(queue_wait),
        stage_claimed_to_request=summary(to_request),
        bursts=[
            {
                "at_s": b["start"] - started,
                "duration_ms": (b["end"] - b["start"]) * 1000,
                "heartbeats": b["heartbeats"],
                "woke": b["woke"],
            }
            for b in bursts
        ],
        model_requests=len(model.requests),
        fleet_cpu_s=cpu,
        fleet_peak_rss_mb=rss,
        worst=sorted(rows, key=lambda r: -r["wake_ms"])[:5],
        timeline=rows,
    )


# ---- the run ----------------------------------------------------------------------------------


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_sigterm()
    results: dict[str, Any] = {
        "settings": {
            "agents": args.agents,
            "busy": BUSY,
            "rounds": args.rounds,
            "scheduler_seconds": args.scheduler_seconds,
            "rate": args.rate,
            "seconds": args.seconds,
            "assign_start": args.assign_start,
            **machine(os.getloadavg()[0]),
            "source": source_version(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="fleet-heartbeats-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if "heartbeat" in args.phases:
                results["in_process"] = asdict(await in_process(args, tmp / "in-process"))
            if "assign" in args.phases:
                async with contextlib.AsyncExitStack() as stack:
                    result = await assignment_latency(args, tmp, stack)
                results["assign"] = asdict(result)
        finally:
            await FleetProcess.kill_leftovers()
    results["checks"] = checks(results)
    return results


def source_version() -> str:
    """The commit measured, and whether files other than benchmarks/ differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = [line for line in changed if not line[3:].startswith("benchmarks/")]
    return f"{commit} + {len(dirty)} changed file(s)" if dirty else commit


def checks(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hb = results.get("in_process")
    if hb:
        direct = hb["idle"]["cpu_us"] / 1000
        out["idle_heartbeat_cpu"] = {
            "value_ms": direct,
            "target": f"< {CPU_TARGET_MS:g} ms CPU per idle heartbeat (direct call)",
            "pass": direct < CPU_TARGET_MS,
        }
        if hb["scheduler"]:
            aps = hb["scheduler"]["cpu_ms_per_heartbeat"]
            out["idle_heartbeat_cpu_apscheduler"] = {
                "value_ms": aps,
                "target": f"< {CPU_TARGET_MS:g} ms CPU per heartbeat (through APScheduler)",
                "pass": aps < CPU_TARGET_MS,
            }
    assign = results.get("assign")
    if assign:
        p99 = assign["wake"]["p99_ms"]
        out["wake_p99"] = {
            "value_ms": p99,
            "target": f"p99 < {P99_TARGET_MS:g} ms from /assign push to the model request",
            "pass": p99 < P99_TARGET_MS,
        }
    return out


def print_table(results: dict[str, Any]) -> None:
    s = results["settings"]
    print(
        f"{s['agents']} agents (1 hub, {s['agents'] - 1} specialists), {s['busy']} with an open "
        f"task; {s['cpus']} CPUs, load {s['load_before']:.2f} before, Python {s['python']}, "
        f"source {s['source']}"
    )
    hb = results.get("in_process")
    if hb:
        print()
        print(f"in-process, {hb['rounds']} rounds over {hb['idle_agents']} idle agents")
        header = f"{'operation':<56} {'count':>6} {'CPU µs':>8} {'wall µs':>8} {'x floor':>8}"
        print(header)
        print("-" * len(header))
        floor = hb["baseline"]["cpu_us"]
        for cost in (hb["idle"], hb["busy"], hb["baseline"], *hb["steps"]):
            print(
                f"{cost['name']:<56} {cost['count']:>6} {cost['cpu_us']:>8.0f} "
                f"{cost['wall_us']:>8.0f} {cost['cpu_us'] / floor:>8.2f}"
            )
        aps = hb["scheduler"]
        if aps:
            print()
            print(
                f"APScheduler, every agent every {aps['interval_s']} s for {aps['seconds']:g} s: "
                f"{aps['heartbeats']} heartbeats ({aps['expected']} due), "
                f"{aps['skipped_rows']} skipped rows; "
                f"{aps['cpu_ms_per_heartbeat']:.2f} ms CPU per heartbeat "
                f"({aps['cpu_pct_of_one_core']:.0f} % of one core)"
            )
            print(
                f"  {aps['bursts']} bursts of {s['agents']} at once: cleared in "
                f"p50 {aps['burst_clear_ms_p50']:.0f} ms, max {aps['burst_clear_ms_max']:.0f} ms; "
                f"one heartbeat's wall time p50 {aps['heartbeat_wall_ms_p50']:.0f} ms, "
                f"p99 {aps['heartbeat_wall_ms_p99']:.0f} ms; APScheduler warnings: "
                f"{aps['missed_warnings']} missed, {aps['overlap_warnings']} still running, "
                f"{aps['other_warnings']} other"
            )
    a = results.get("assign")
    if a:
        print()
        print(
            f"fleet run, /assign at {a['rate_achieved']:.1f}/s (target {a['rate_target']:g}/s), "
            f"{a['pushes']} pushes from {a['start_offset_s']:.0f} s after polling began; "
            f"{a['model_requests']} model requests; fleet CPU {a['fleet_cpu_s']:.1f} s, "
            f"peak RSS {a['fleet_peak_rss_mb']:.0f} MB"
        )
        header = f"{'latency from the push':<44} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} "
        header += f"{'p99 ms':>8} {'max ms':>8}"
        print(header)
        print("-" * len(header))
        for key, label in (
            ("wake", "first model request of the agent"),
            ("wake_outside_burst", "  ... pushed outside heartbeat bursts"),
            ("wake_in_burst", "  ... pushed during a heartbeat burst"),
            ("stage_push_to_queued", "  stage: push -> wake row (runs.queued_at)"),
            ("stage_queued_to_claimed", "  stage: queued -> claimed (runs.started_at)"),
            ("stage_claimed_to_request", "  stage: claimed -> model request"),
            ("reply", "/assign reply (sendMessage answered)"),
        ):
            v = a[key]
            print(
                f"{label:<44} {v['count']:>4} {v['p50_ms']:>8.1f} {v['p90_ms']:>8.1f} "
                f"{v['p99_ms']:>8.1f} {v['max_ms']:>8.1f}"
            )
        for b in a["bursts"]:
            print(
                f"heartbeat burst at {b['at_s']:.1f} s: {b['heartbeats']:.0f} heartbeats "
                f"({b['woke']:.0f} woke a run) over {b['duration_ms']:.0f} ms"
            )
        worst = ", ".join(
            f"{w['agent']} {w['wake_ms']:.0f} ms at {w['pushed_s']:.1f} s" for w in a["worst"]
        )
        print(f"slowest wakes: {worst}")
    print()
    for check in results["checks"].values():
        print(f"{verdict(check['pass'])} {check['value_ms']:.2f} ms ({check['target']})")


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__)
    parser.add_argument("--agents", type=int, default=200, help="fleet size (200)")
    parser.add_argument("--rounds", type=int, default=10, help="idle heartbeats per agent (10)")
    parser.add_argument(
        "--scheduler-seconds",
        type=float,
        default=10.0,
        help="seconds of 1 s APScheduler heartbeats (10; 0 skips)",
    )
    parser.add_argument("--rate", type=float, default=5.0, help="/assign per second (5)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of /assign (20)")
    parser.add_argument(
        "--assign-start",
        type=float,
        default=50.0,
        help="first /assign this many seconds after fleet run began polling (50: the first "
        "heartbeat burst, due 60 s after that, falls in the window; 0: at once)",
    )
    parser.add_argument(
        "--phases",
        default="heartbeat,assign",
        help="comma-separated: heartbeat (in-process + APScheduler), assign (fleet run)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_py_spy(
        parser,
        "profile fleet run during the /assign window with py-spy, all threads, idle included",
    )
    args = parse_args(parser, argv)
    args.phases = set(args.phases.split(","))
    if not args.phases <= {"heartbeat", "assign"}:
        parser.error("--phases takes heartbeat and/or assign")
    if args.agents < 2 + BUSY or args.rounds < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error(f"--agents must be at least {2 + BUSY}; --rounds, --rate, --seconds > 0")
    if "assign" in args.phases and round(args.rate * args.seconds) > args.agents - 4:
        parser.error("--rate x --seconds must not exceed --agents - 4 (one /assign per agent)")
    return run(benchmark(args), print_table, as_json=args.json, interrupted="fleet run stopped")


if __name__ == "__main__":
    sys.exit(main())
