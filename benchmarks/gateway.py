"""Overhead of the LLM gateway per call, against a direct SDK call to the same server.

Run from the repository root::

    python benchmarks/gateway.py [--calls 300] [--requests turn,minimal] [--json] [--profile]

One run measures both sides against one local Anthropic Messages API (`tests/anthropic_server.py`,
started in its own process so its CPU is not charged to either side; it answers every request
with "ok" at once):

- **direct**: `anthropic.AsyncAnthropic(api_key=..., base_url=..., max_retries=0)` and
  `await client.messages.create(...)`, the cheapest way to make the call;
- **gateway**: the real `agents.gateway.Gateway` (real Config from a TOML file, `Database` on a
  temporary SQLite file, migrated) and `await gateway.create(agent, ...)` for an agent with one
  key profile: the same request, plus what the gateway adds (failover bookkeeping, a read of
  the shared key-profile state and of the agent's budget standing before each call (for a
  budgeted agent, under a lock, with a hold of the call's worst case), a usage row with its
  cost per call, queued in the call and written behind it in batches; every row is counted at
  the end).

Two requests are measured: **turn** (the agent's tool definitions, a system prompt of a few KB
and a brief, as a real agent turn sends) and **minimal** (one short user message, no tools: the
worst case for the ratio, since the HTTP call itself is cheapest). Calls are sequential; the two
sides alternate in blocks of `--block` calls so that drift (CPU frequency, the SQLite file
growing) hits both alike. Each side gets `--warmup` calls first.

Reported per call: mean / p50 / p99 wall time, CPU time of this process (the server's is not
included), and the ratio gateway / direct of the means. The target is a ratio under 1.3 for the
turn request; the minimal request is reported alongside as the bound. Then a breakdown of the
gateway's own steps, each measured alone: the usage row as the gateway writes it (an ORM add in
its own transaction), the same row as a Core INSERT, and the price lookup and cost computation.
The attribution runs the judged request again against gateways with the budget check, the
usage row, or both switched off (no-op methods on that instance), each against its own direct
side (`--no-ablate` skips them). `--profile` adds a cProfile of the gateway calls (top functions
by cumulative time; coroutine resumptions count as calls).

The CPU column is the steadier signal on a shared or small machine: the wall times include the
server process and whatever else runs, the CPU times only this process.

The exit code is 0 whether the target passes or not (it is a report); 1 when the benchmark
itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import pstats
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
from common import (  # before the project's imports: it puts the root on sys.path
    ROOT,
    BenchmarkError,
    Cost,
    measure,
    parse_args,
    parser_for,
    percentile,
    run,
    test_keys_in_env,
    verdict,
)
from sqlalchemy import func, insert, select

from agents.gateway import Gateway
from agents.prices import cost_of, price_of
from agents.tools import definitions
from bot.config import AgentConfig, Config, load_config
from storage.db import Database
from storage.models import AgentState, Usage
from tests.fleet import ANTHROPIC_KEY, write_config

MODEL = "claude-sonnet-4-6"
TARGET_RATIO = 1.3
BATCH = 50  # rows per INSERT in the batched-write step of the breakdown
NO_TELEGRAM = "http://127.0.0.1:9"
AGENTS = f"""
[[agents]]
id = "hub"
title = "Hub"
hub = true
workspace = "workspaces/hub"
model = "{MODEL}"
authority = ["assign", "comment", "subtask"]
"""
SYSTEM = 'You are Hub (agent "hub") in a fleet of AI agents run from Telegram.\n\n' + "\n".join(
    f"- Rule {i}: keep runs short, write evidence, ask when blocked." for i in range(60)
)
BRIEF = (
    "Your task: #12 Write the weekly report\nStatus: in_progress · priority normal\n\n"
    "Task description:\nNumbers from sales and support, compared with last week.\n\n"
    "Work with the tools. When the task is finished, call set_status with the evidence."
)

# The local Anthropic server, run as `python benchmarks/gateway.py --serve`.
SERVE_FLAG = "--serve"
SCRIPT = Path(__file__).resolve()


# ---- statistics ---------------------------------------------------------------------------------


@dataclass
class Side:
    """One side's calls: wall times per call (ms) and the CPU time of this process."""

    name: str
    wall_ms: list[float]
    cpu_s: float = 0.0

    def summary(self) -> dict[str, float]:
        n = len(self.wall_ms)
        return {
            "calls": n,
            "mean_ms": sum(self.wall_ms) / n,
            "p50_ms": percentile(self.wall_ms, 50),
            "p99_ms": percentile(self.wall_ms, 99),
            "max_ms": max(self.wall_ms),
            "cpu_ms": self.cpu_s * 1000 / n,
        }


# ---- the server in its own process ------------------------------------------------------------


async def serve() -> None:
    """Answer every request with "ok"; print the base URL; stop when stdin closes.

    The fake keeps every request it got; left to grow, its log makes the server's own
    garbage collector stall a request for 200-300 ms now and then (a full collection over
    thousands of request bodies), which lands on whichever side is calling. So the log is
    emptied as it fills and the collector sees only what the requests leave behind."""
    from tests.anthropic_server import AnthropicServer, text

    async def forget(server: AnthropicServer) -> None:
        while True:
            await asyncio.sleep(0.1)
            server.requests.clear()

    async with AnthropicServer(default=text("ok")) as server:
        gc.collect()
        gc.freeze()
        trimmer = asyncio.create_task(forget(server))
        print(server.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        trimmer.cancel()


@contextlib.asynccontextmanager
async def server_process() -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        SERVE_FLAG,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line.startswith(b"http"):
            raise BenchmarkError(f"the Anthropic server did not start: {line!r}")
        yield line.decode().strip()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# ---- the measurement ----------------------------------------------------------------------------


@dataclass
class Request:
    name: str
    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


def requests_for(agent: AgentConfig) -> list[Request]:
    return [
        Request("turn", SYSTEM, [{"role": "user", "content": BRIEF}], definitions(agent)),
        Request("minimal", "You are hub.", [{"role": "user", "content": "ping"}], None),
    ]


async def compare(
    request: Request,
    gateway: Gateway,
    agent: AgentConfig,
    direct: anthropic.AsyncAnthropic,
    args: argparse.Namespace,
    profiler: cProfile.Profile | None,
) -> tuple[Side, Side]:
    kwargs: dict[str, Any] = {"tools": request.tools} if request.tools else {}

    async def via_gateway() -> None:
        reply = await gateway.create(
            agent,
            run_id=None,
            purpose="turn",
            system=request.system,
            messages=request.messages,
            tools=request.tools,
        )
        if reply.message.content[0].type != "text":
            raise BenchmarkError("unexpected reply through the gateway")

    async def via_sdk() -> None:
        message = await direct.messages.create(
            model=MODEL,
            system=request.system,
            messages=request.messages,  # type: ignore[arg-type]
            max_tokens=4096,
            **kwargs,
        )
        if message.content[0].type != "text":
            raise BenchmarkError("unexpected reply from the SDK")

    for _ in range(args.warmup):
        await via_gateway()
        await via_sdk()
    gw, sdk = Side("gateway", []), Side("direct", [])
    done = 0
    while done < args.calls:
        block = min(args.block, args.calls - done)
        # Alternate which side goes first, so neither always follows the other.
        order = [(gw, via_gateway), (sdk, via_sdk)]
        if (done // args.block) % 2:
            order.reverse()
        for side, call in order:
            gc.collect()
            profiling = profiler if side is gw else None
            cpu = time.process_time()
            if profiling is not None:
                profiling.enable()
            for _ in range(block):
                start = time.perf_counter()
                await call()
                side.wall_ms.append((time.perf_counter() - start) * 1000)
            if profiling is not None:
                profiling.disable()
            side.cpu_s += time.process_time() - cpu
        done += block
    return gw, sdk


def per_row(measured: Cost) -> Cost:
    measured.wall_us /= BATCH
    measured.cpu_us /= BATCH
    return measured


async def breakdown(db: Database, config: Config, count: int) -> list[Cost]:
    """The gateway's own steps, each alone."""
    price = price_of(config, MODEL)
    if price is None:
        raise BenchmarkError(f"no price for {MODEL}")
    usage = anthropic.types.Usage(
        input_tokens=1200,
        output_tokens=40,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
    )
    row: dict[str, Any] = {
        "agent_id": "hub",
        "run_id": None,
        "purpose": "turn",
        "model": MODEL,
        "profile": "primary",
        "input_tokens": 1200,
        "output_tokens": 40,
        "cache_write_tokens": 0,
        "cache_read_tokens": 0,
        "cost_usd": Decimal("0.0042"),
        "price_known": True,
        "latency_ms": 3,
        "fallback_used": False,
        "status": "ok",
        "error": None,
    }

    async def orm_row(_: int) -> None:
        async with db.session() as session:
            session.add(Usage(**row))

    async def core_row(_: int) -> None:
        async with db.session() as session:
            await session.execute(insert(Usage).values(**row))

    async def engine_row(_: int) -> None:
        async with db.engine.begin() as connection:
            await connection.execute(insert(Usage).values(**row))

    async def batched_rows(_: int) -> None:
        async with db.session() as session:
            await session.execute(insert(Usage), [row] * BATCH)

    async def read_transaction(_: int) -> None:
        async with db.session() as session:
            await session.get(AgentState, "hub")

    async def month_spend(_: int) -> None:
        # What a budget check costs if it sums the usage table per call.
        async with db.session() as session:
            stmt = select(func.coalesce(func.sum(Usage.cost_usd), 0)).where(
                Usage.agent_id == "hub"
            )
            await session.execute(stmt)

    async def pricing(_: int) -> None:
        cost_of(price, usage)
        price_of(config, MODEL)

    return [
        await measure("usage row: ORM add, own transaction (as the gateway)", count, orm_row),
        await measure("usage row: Core INSERT, own session transaction", count, core_row),
        await measure("usage row: Core INSERT on engine.begin()", count, engine_row),
        per_row(
            await measure(f"usage rows: {BATCH} in one INSERT, per row", count // 10, batched_rows)
        ),
        await measure("read transaction: one SELECT by key (AgentState)", count, read_transaction),
        await measure("month-to-date SUM over usage for the agent", count, month_spend),
        await measure("price_of + cost_of", count * 10, pricing),
    ]


async def prefill(db: Database, count: int) -> None:
    """`count` usage rows of this month for the agent, as a fleet has them mid-month."""
    row: dict[str, Any] = {
        "agent_id": "hub",
        "purpose": "turn",
        "model": MODEL,
        "profile": "primary",
        "input_tokens": 1200,
        "output_tokens": 40,
        "cost_usd": Decimal("0.0042"),
        "status": "ok",
    }
    for start in range(0, count, 1000):
        async with db.session() as session:
            await session.execute(insert(Usage), [row] * min(1000, count - start))


def versus(gw: Side, sdk: Side) -> dict[str, Any]:
    g, d = gw.summary(), sdk.summary()
    return {
        "gateway": g,
        "direct": d,
        "ratio_mean": g["mean_ms"] / d["mean_ms"],
        "ratio_p50": g["p50_ms"] / d["p50_ms"],
        "ratio_cpu": g["cpu_ms"] / d["cpu_ms"],
        "overhead_mean_ms": g["mean_ms"] - d["mean_ms"],
        "overhead_cpu_ms": g["cpu_ms"] - d["cpu_ms"],
    }


# What the gateway does around the HTTP call, by method: switched off one at a time in a
# separate Gateway to attribute the overhead (a diagnosis only; such a gateway is not usable).
ABLATIONS = {
    "without the budget check": ("_check_budget",),
    "without the usage row": ("_write_behind",),
    "without either": ("_check_budget", "_write_behind"),
}


async def ablation(
    request: Request,
    config: Config,
    db: Database,
    agent: AgentConfig,
    direct: anthropic.AsyncAnthropic,
    args: argparse.Namespace,
) -> dict[str, Any]:
    async def nothing(*_: Any, **__: Any) -> None:
        return None

    out: dict[str, Any] = {}
    for name, methods in ABLATIONS.items():
        if not all(hasattr(Gateway, method) for method in methods):
            continue  # the gateway changed shape; nothing to switch off
        gateway = Gateway(config, db)
        for method in methods:
            setattr(gateway, method, nothing)
        try:
            gw, sdk = await compare(request, gateway, agent, direct, args, None)
        finally:
            await gateway.close()
        out[name] = versus(gw, sdk)
    return out


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleet-gateway-bench-") as tmp:
        folder = Path(tmp)
        async with server_process() as base_url:
            path = write_config(folder, NO_TELEGRAM, anthropic_base=base_url, agents=AGENTS)
            test_keys_in_env()
            config = load_config(path)
            agent = config.agents[0]
            db = Database(config.database.url)
            gateway = Gateway(config, db)
            direct = anthropic.AsyncAnthropic(
                api_key=ANTHROPIC_KEY, base_url=base_url, max_retries=0, timeout=120.0
            )
            profiler = cProfile.Profile() if args.profile else None
            try:
                await db.migrate()
                await prefill(db, args.prefill)
                results: dict[str, Any] = {
                    "calls": args.calls,
                    "warmup": args.warmup,
                    "block": args.block,
                    "prefill": args.prefill,
                    "target_ratio": TARGET_RATIO,
                    "requests": {},
                }
                chosen = {r.name: r for r in requests_for(agent)}
                for name in args.requests:
                    request = chosen[name]
                    gw, sdk = await compare(request, gateway, agent, direct, args, profiler)
                    results["requests"][request.name] = versus(gw, sdk)
                await gateway.flush()  # rows are written behind the calls; all must arrive
                async with db.session() as session:
                    rows = (
                        await session.execute(select(func.count()).select_from(Usage))
                    ).scalar_one()
                expected = args.prefill + len(args.requests) * (args.calls + args.warmup)
                if rows != expected:
                    raise BenchmarkError(f"{rows} usage rows for {expected} gateway calls")
                results["usage_rows"] = rows
                judged = "turn" if "turn" in results["requests"] else args.requests[0]
                results["judged"] = judged
                if args.ablate:
                    results["ablation"] = await ablation(
                        chosen[judged], config, db, agent, direct, args
                    )
                results["steps"] = [asdict(s) for s in await breakdown(db, config, args.calls)]
                results["pass"] = results["requests"][judged]["ratio_mean"] < TARGET_RATIO
                if profiler is not None:
                    out = io.StringIO()
                    stats = pstats.Stats(profiler, stream=out)
                    stats.sort_stats("cumulative").print_stats(args.profile_lines)
                    results["profile"] = out.getvalue()
                return results
            finally:
                await direct.close()
                await gateway.close()
                await db.dispose()


# ---- output -----------------------------------------------------------------------------------


def print_table(results: dict[str, Any]) -> None:
    print(
        f"Gateway overhead: {results['calls']} sequential calls per side and request "
        f"(warm-up {results['warmup']}, blocks of {results['block']}), local Anthropic server "
        f"in its own process; {results['prefill']} usage rows this month before the start\n"
    )
    header = (
        f"{'request':<8} {'side':<8} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'cpu ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results["requests"].items():
        for side in ("direct", "gateway"):
            s = r[side]
            print(
                f"{name:<8} {side:<8} {s['mean_ms']:8.3f} {s['p50_ms']:8.3f} "
                f"{s['p99_ms']:8.3f} {s['max_ms']:8.3f} {s['cpu_ms']:8.3f}"
            )
        print(
            f"{name:<8} ratio gateway/direct: mean {r['ratio_mean']:.2f}x, p50 "
            f"{r['ratio_p50']:.2f}x, CPU {r['ratio_cpu']:.2f}x; "
            f"overhead {r['overhead_mean_ms']:.3f} ms wall, "
            f"{r['overhead_cpu_ms']:.3f} ms CPU per call\n"
        )
    if results.get("ablation"):
        print(f"Attribution ({results['judged']} request; parts switched off, same run):")
        for name, r in results["ablation"].items():
            print(
                f"  gateway {name:<26} mean {r['gateway']['mean_ms']:7.3f} ms vs direct "
                f"{r['direct']['mean_ms']:7.3f} ms: {r['ratio_mean']:.2f}x (CPU "
                f"{r['ratio_cpu']:.2f}x), overhead {r['overhead_mean_ms']:.3f} ms"
            )
        print()
    print("The gateway's own steps, each measured alone:")
    for s in results["steps"]:
        print(f"  {s['name']:<56} {s['wall_us']:8.1f} us wall {s['cpu_us']:8.1f} us CPU")
    if "profile" in results:
        print("\ncProfile of the gateway calls (cumulative):")
        print(results["profile"])
    ratios = "; ".join(
        f"{r['ratio_mean']:.2f}x on a {name} request" for name, r in results["requests"].items()
    )
    print(
        f"\n{verdict(results['pass'])}: gateway/direct {ratios} (target < {TARGET_RATIO}x, "
        f"judged on the {results['judged']} request)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__)
    parser.add_argument("--calls", type=int, default=300, help="calls per side and request (300)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up calls per side (30)")
    parser.add_argument("--block", type=int, default=25, help="calls per alternating block (25)")
    parser.add_argument(
        "--requests", default="turn,minimal", help="which requests, in order (turn,minimal)"
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="usage rows of this month written for the agent before measuring (0)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--no-ablate",
        dest="ablate",
        action="store_false",
        help="skip the attribution runs (budget check / usage row switched off)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway calls")
    parser.add_argument("--profile-lines", type=int, default=30, help="profile rows (30)")
    args = parse_args(parser, argv)
    args.requests = args.requests.split(",")
    if not args.requests or not set(args.requests) <= {"turn", "minimal"}:
        parser.error("--requests takes turn and/or minimal")
    if args.calls < 1 or args.warmup < 0 or args.block < 1 or args.prefill < 0:
        parser.error("--calls and --block must be at least 1, --warmup and --prefill at least 0")
    return run(benchmark(args), print_table, as_json=args.json)


if __name__ == "__main__":
    if sys.argv[1:] == [SERVE_FLAG]:
        asyncio.run(serve())
        sys.exit(0)
    sys.exit(main())
