"""Update throughput and latency of `fleet run` against a bare aiogram 3 echo bot.

Run from the repository root::

    python benchmarks/updates.py [--updates N] [--rate R] [--duration S] [--json]

Both bots long-poll the same in-process local Bot API server (`tests.botapi_server`), one
after the other, in the same run. For each bot:

1. warm-up: a few updates, so process start, imports and first queries are not measured;
2. throughput: N updates pushed at once, spread over the private chats of the configured
   people; updates/s = N / (last reply's answer time - first push);
3. latency: updates pushed at R/s for S seconds; an update's latency is the time the server
   answered its reply (`sendMessage`) minus the time it was pushed. Replies are matched to
   pushes by count per chat (the k-th reply in a chat answers the k-th push there): aiogram
   handles updates as concurrent tasks, so a reply may overtake another in the same chat and
   swap two latencies. For the echo bot the text carries a sequence number, and the number of
   replies this matching got wrong is reported.

4. idle: the CPU it uses over a few seconds with nothing to do.

Then the peak RSS (VmHWM) of `fleet run` is read from /proc, for the test config and for a
copy of config.example.toml pointed at the local server, and on a fresh `fleet run` at idle,
after a storm of updates at once and after a /costs chart (the growth over idle is reported).
Results are a report: the exit code is 0 whether the targets pass or not, non-zero only when
the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (  # before the project's imports: it puts the root on sys.path
    ROOT,
    BenchmarkError,
    add_py_spy,
    cancel_on_sigterm,
    check_alive,
    log_tail,
    machine,
    parse_args,
    parser_for,
    percentile,
    proc_cpu_seconds,
    proc_memory_mb,
    py_spy_record,
    run,
    stop_process,
    terminate,
    verdict,
)

from tests.botapi_server import BotAPIServer, Call
from tests.fleet import FLEET, OPERATOR, OWNER, TOKEN, VIEWER, fleet_env, write_config

USERS = (OWNER, OPERATOR, VIEWER)
POLLING_TIMEOUT = 2
WARMUP = 30
REPLY_TIMEOUT = 120.0
IDLE_SECONDS = 3.0

P99_TARGET_MS = 100.0
THROUGHPUT_TARGET = 0.40
RSS_TARGET_MB = 120.0
RSS_GROWTH_TARGET_MB = 60.0
# Telegram would take replies at 30/s; this benchmark measures how fast fleet run handles
# updates, so the config lets it reply as fast as the local server answers.
UNPACED = "messages_per_second = 100000"

ECHO_BOT = '''\
"""A bare aiogram 3 echo bot: the baseline for benchmarks/updates.py."""
import asyncio
import logging
import os
import sys

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message


async def main(base_url: str, polling_timeout: int) -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(base_url))
    bot = Bot(os.environ["TELEGRAM_BOT_TOKEN"], session=session)
    dp = Dispatcher()

    @dp.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "?")

    await dp.start_polling(bot, polling_timeout=polling_timeout)


logging.basicConfig(level=logging.WARNING)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''

_SEQ = re.compile(r"#(\d+)$")


# ---- processes -------------------------------------------------------------------------------


class BotProcess:
    """A bot subprocess whose output goes to a log file; stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=str(self.log_path.parent),
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        check_alive(self.proc, self.name, self.log_path)

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def memory_mb(self) -> dict[str, float]:
        """VmHWM (peak RSS) and VmRSS of the process, in MB (MiB)."""
        return proc_memory_mb(self.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        return proc_cpu_seconds(self.pid)

    async def stop(self) -> int | None:
        return await stop_process(self.proc, self.name)


# ---- measuring -------------------------------------------------------------------------------


class Replies:
    """The sendMessage calls the server answers to the given chats, from now on, per chat."""

    def __init__(self, server: BotAPIServer, chats: tuple[int, ...]) -> None:
        self.server = server
        self.pos = len(server.calls)
        self.by_chat: dict[int, list[Call]] = {chat: [] for chat in chats}
        self.count = 0

    def scan(self) -> None:
        calls = self.server.calls
        while self.pos < len(calls):
            call = calls[self.pos]
            self.pos += 1
            if call.method != "sendMessage":
                continue
            chat = call.params.get("chat_id")
            if chat not in self.by_chat:
                continue
            if not call.ok:
                raise BenchmarkError(f"the server refused a reply: {call.summary()}")
            self.by_chat[chat].append(call)
            self.count += 1

    async def wait(self, count: int, bot: BotProcess) -> None:
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            self.scan()
            if self.count >= count:
                return
            bot.check_alive()
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"{bot.name}: {self.count} of {count} replies after {REPLY_TIMEOUT:.0f} s\n"
                    f"{self.server.describe_calls(10)}\n{bot.log_tail()}"
                )
            await asyncio.sleep(0.005)


@dataclass
class Push:
    seq: int
    chat: int
    at: float


def push(server: BotAPIServer, seq: int, command: str) -> Push:
    chat = USERS[seq % len(USERS)]
    at = time.monotonic()
    server.push_message(chat, f"{command} #{seq}")
    return Push(seq, chat, at)


def match(pushes: list[Push], replies: Replies) -> tuple[list[float], int]:
    """Latencies in ms (k-th reply in a chat answers its k-th push), and how many of those
    pairings a sequence number in the reply (echo bot only) shows to be wrong."""
    by_chat: dict[int, list[Push]] = {}
    for p in pushes:
        by_chat.setdefault(p.chat, []).append(p)
    latencies: list[float] = []
    mismatched = 0
    for chat, sent in by_chat.items():
        answered = replies.by_chat[chat]
        for p, reply in zip(sent, answered, strict=False):
            latencies.append((reply.at - p.at) * 1000)
            seq = _SEQ.search(str(reply.params.get("text", "")))
            if seq is not None and int(seq.group(1)) != p.seq:
                mismatched += 1
    return latencies, mismatched


@dataclass
class BotResult:
    bot: str
    updates: int
    throughput_per_s: float = 0.0
    throughput_seconds: float = 0.0
    bot_cpu_ms_per_update: float = 0.0  # the bot process, during the throughput phase
    server_cpu_ms_per_update: float = 0.0  # this process (server + pusher), same phase
    rate_target: float = 0.0
    rate_achieved: float = 0.0
    rate_updates: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mismatched_pairs: int | None = None  # echo bot only
    peak_rss_mb: float = 0.0
    rss_mb: float = 0.0
    idle_cpu_pct: float = 0.0  # % of one core over IDLE_SECONDS with nothing to do


async def measure(
    server: BotAPIServer,
    bot: BotProcess,
    *,
    command: str,
    updates: int,
    rate: float,
    duration: float,
    echoes: bool,
) -> BotResult:
    result = BotResult(bot=bot.name, updates=updates, rate_target=rate)
    seq = 0

    # Warm-up.
    replies = Replies(server, USERS)
    for _ in range(WARMUP):
        push(server, seq, command)
        seq += 1
    await replies.wait(WARMUP, bot)
    await asyncio.sleep(0.5)

    # Throughput: everything at once.
    replies = Replies(server, USERS)
    cpu_bot, cpu_here = bot.cpu_seconds(), time.process_time()
    first = time.monotonic()
    for _ in range(updates):
        push(server, seq, command)
        seq += 1
    await replies.wait(updates, bot)
    last = max(c.at for calls in replies.by_chat.values() for c in calls)
    result.throughput_seconds = last - first
    result.throughput_per_s = updates / result.throughput_seconds
    result.bot_cpu_ms_per_update = (bot.cpu_seconds() - cpu_bot) * 1000 / updates
    result.server_cpu_ms_per_update = (time.process_time() - cpu_here) * 1000 / updates
    await asyncio.sleep(0.5)

    # Latency at a fixed rate.
    replies = Replies(server, USERS)
    count = max(1, round(rate * duration))
    pushes: list[Push] = []
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pushes.append(push(server, seq, command))
        seq += 1
    elapsed = pushes[-1].at - pushes[0].at
    result.rate_achieved = (count - 1) / elapsed if elapsed > 0 else float("nan")
    await replies.wait(count, bot)
    latencies, mismatched = match(pushes, replies)
    result.rate_updates = len(latencies)
    result.p50_ms = percentile(latencies, 50)
    result.p90_ms = percentile(latencies, 90)
    result.p99_ms = percentile(latencies, 99)
    result.max_ms = max(latencies)
    result.mismatched_pairs = mismatched if echoes else None

    # Idle: nothing to answer; a long-polling bot should use next to no CPU.
    await asyncio.sleep(0.5)
    result.idle_cpu_pct = await idle_cpu_pct(bot, IDLE_SECONDS)

    memory = bot.memory_mb()
    result.peak_rss_mb = memory["VmHWM"]
    result.rss_mb = memory["VmRSS"]
    return result


async def idle_cpu_pct(bot: BotProcess, seconds: float) -> float:
    """CPU the bot uses over `seconds` with nothing to do, in % of one core."""
    before = bot.cpu_seconds()
    await asyncio.sleep(seconds)
    bot.check_alive()
    return (bot.cpu_seconds() - before) * 100 / seconds


async def start_polling(server: BotAPIServer, bot: BotProcess) -> None:
    await bot.start()
    deadline = time.monotonic() + 30
    while server.update_waiters == 0:
        bot.check_alive()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{bot.name} did not start polling in 30 s:\n{bot.log_tail()}")
        await asyncio.sleep(0.02)


async def stop_bot(server: BotAPIServer, bot: BotProcess) -> None:
    code = await bot.stop()
    if code not in (0, None):
        raise BenchmarkError(f"{bot.name} stopped with exit code {code}:\n{bot.log_tail()}")
    # The next bot must not receive this one's leftovers (there should be none).
    server.pending_updates.clear()


async def run_bot(
    server: BotAPIServer, bot: BotProcess, stack: contextlib.AsyncExitStack, **kwargs: Any
) -> BotResult:
    stack.push_async_callback(bot.stop)  # on any error; stopping twice is harmless
    await start_polling(server, bot)
    result = await measure(server, bot, **kwargs)
    await stop_bot(server, bot)
    return result


async def example_config_rss(
    server: BotAPIServer, tmp: Path, stack: contextlib.AsyncExitStack, seconds: float
) -> dict[str, float]:
    """Peak RSS of `fleet run` on a copy of config.example.toml pointed at the local server."""
    folder = tmp / "example"
    folder.mkdir()
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text, n = re.subn(
        r'^api_base = ""', f'api_base = "{server.base_url}"', text, count=1, flags=re.M
    )
    if n != 1:
        raise BenchmarkError('config.example.toml has no `api_base = ""` line to point here')
    config = folder / "fleet.toml"
    config.write_text(text, encoding="utf-8")
    parsed = tomllib.loads(text)
    for agent in parsed.get("agents", []):
        (folder / agent["workspace"]).mkdir(parents=True, exist_ok=True)  # as `fleet init` does
    owner = next(
        (p["telegram_id"] for p in parsed.get("people", []) if p.get("role") == "owner"), None
    )
    if owner is None:
        raise BenchmarkError("config.example.toml names no owner to send /status from")
    bot = BotProcess(
        "fleet run (config.example.toml)",
        [str(FLEET), "run", "--config", str(config)],
        fleet_env(),
        folder / "fleet.log",
    )
    stack.push_async_callback(bot.stop)
    await start_polling(server, bot)
    replies = Replies(server, (owner,))
    for i in range(5):
        server.push_message(owner, f"/status #{i}")
        await asyncio.sleep(0.2)
    await replies.wait(5, bot)
    idle = await idle_cpu_pct(bot, seconds)
    memory = bot.memory_mb()
    await stop_bot(server, bot)
    return {"peak_rss_mb": memory["VmHWM"], "rss_mb": memory["VmRSS"], "idle_cpu_pct": idle}


def unpaced_config(folder: Path, base_url: str) -> Path:
    """The test config with Telegram's overall limit lifted (see UNPACED)."""
    config = write_config(folder, base_url, polling_timeout=POLLING_TIMEOUT)
    text = config.read_text(encoding="utf-8")
    line = f"polling_timeout = {POLLING_TIMEOUT}\n"
    if line not in text:
        raise BenchmarkError(f"the test config has no {line.strip()!r} line")
    config.write_text(text.replace(line, line + UNPACED + "\n", 1), encoding="utf-8")
    return config


async def add_usage(folder: Path) -> None:
    """A month of spend for two agents, so /costs draws its chart."""
    from datetime import timedelta
    from decimal import Decimal

    from storage.db import Database
    from storage.models import Usage, utcnow

    db = Database(f"sqlite+aiosqlite:///{folder / 'fleet.db'}")
    try:
        now = utcnow()
        first = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0)
        async with db.session() as session:
            for day in range(now.day):
                for agent in ("hub", "coder"):
                    session.add(
                        Usage(
                            agent_id=agent,
                            model="claude-sonnet-4-6",
                            profile="primary",
                            input_tokens=1000,
                            output_tokens=200,
                            cost_usd=Decimal("0.25") * (day % 5 + 1),
                            created_at=first + timedelta(days=day),
                        )
                    )
    finally:
        await db.dispose()


async def memory_steps(
    server: BotAPIServer, tmp: Path, stack: contextlib.AsyncExitStack, storm: int
) -> dict[str, float]:
    """Peak RSS of a fresh `fleet run` (test config): idle after a few /status, after `storm`
    updates pushed at once, and after a /costs chart."""
    folder = tmp / "memory"
    folder.mkdir()
    config = unpaced_config(folder, server.base_url)
    bot = BotProcess(
        "fleet run (memory)",
        [str(FLEET), "run", "--config", str(config)],
        fleet_env(),
        folder / "fleet.log",
    )
    stack.push_async_callback(bot.stop)
    await start_polling(server, bot)
    await add_usage(folder)
    replies = Replies(server, USERS)
    for i in range(5):
        push(server, i, "/status")
    await replies.wait(5, bot)
    await asyncio.sleep(IDLE_SECONDS)
    idle = bot.memory_mb()["VmHWM"]
    replies = Replies(server, USERS)
    for i in range(storm):
        push(server, i, "/status")
    await replies.wait(storm, bot)
    await asyncio.sleep(1.0)
    after_storm = bot.memory_mb()["VmHWM"]
    mark = server.mark()
    server.push_message(OWNER, "/costs")
    await server.wait_for_call(
        "sendPhoto", lambda c: c.params.get("chat_id") == OWNER, after=mark, timeout=120
    )
    await asyncio.sleep(1.0)
    after_costs = bot.memory_mb()["VmHWM"]
    await stop_bot(server, bot)
    return {
        "storm": float(storm),
        "idle_mb": idle,
        "storm_mb": after_storm,
        "costs_mb": after_costs,
    }


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with contextlib.AsyncExitStack() as stack:
            server = BotAPIServer(TOKEN)
            await server.start()
            stack.push_async_callback(server.stop)
            phases = {
                "command": args.command,
                "updates": args.updates,
                "rate": args.rate,
                "duration": args.duration,
            }

            echo_script = tmp / "echo_bot.py"
            echo_script.write_text(ECHO_BOT, encoding="utf-8")
            echo = BotProcess(
                "aiogram echo",
                [sys.executable, str(echo_script), server.base_url, str(POLLING_TIMEOUT)],
                fleet_env(),
                tmp / "echo.log",
            )
            baseline = await run_bot(server, echo, stack, echoes=True, **phases)

            folder = tmp / "fleet"
            folder.mkdir()
            config = unpaced_config(folder, server.base_url)
            fleet = BotProcess(
                "fleetbridge",
                [str(FLEET), "run", "--config", str(config)],
                fleet_env(),
                folder / "fleet.log",
            )
            if args.py_spy:
                # Profile the whole measured part (throughput and fixed rate) of fleet run.
                stack.push_async_callback(fleet.stop)
                await start_polling(server, fleet)
                # Only the thread holding the GIL: where Python CPU time goes.
                spy = await py_spy_record(fleet.pid, args.py_spy, "--gil")
                stack.callback(terminate, spy)
                result = await measure(server, fleet, echoes=False, **phases)
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                await spy.wait()
                await stop_bot(server, fleet)
            else:
                result = await run_bot(server, fleet, stack, echoes=False, **phases)

            example = await example_config_rss(server, tmp, stack, args.example_seconds)
            memory = await memory_steps(server, tmp, stack, args.storm)
            if server.errors:
                raise BenchmarkError(f"the local Bot API server failed: {server.errors!r}")
    return report(baseline, result, example, memory, args)


def report(
    baseline: BotResult,
    fleet: BotResult,
    example: dict[str, float],
    memory: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    ratio = fleet.throughput_per_s / baseline.throughput_per_s
    checks = {
        "p99_latency": {
            "value_ms": fleet.p99_ms,
            "target": f"< {P99_TARGET_MS:.0f} ms at {args.rate:g} updates/s",
            "pass": fleet.p99_ms < P99_TARGET_MS,
        },
        "throughput": {
            "ratio": ratio,
            "target": f">= {THROUGHPUT_TARGET:.0%} of baseline",
            "pass": ratio >= THROUGHPUT_TARGET,
        },
        "peak_rss_test_config": {
            "value_mb": fleet.peak_rss_mb,
            "target": f"< {RSS_TARGET_MB:.0f} MB",
            "pass": fleet.peak_rss_mb < RSS_TARGET_MB,
        },
        "peak_rss_growth": {
            "value_mb": max(memory["storm_mb"], memory["costs_mb"]) - memory["idle_mb"],
            "target": f"<= +{RSS_GROWTH_TARGET_MB:.0f} MB over idle",
            "pass": max(memory["storm_mb"], memory["costs_mb"]) - memory["idle_mb"]
            <= RSS_GROWTH_TARGET_MB,
        },
        "peak_rss_example_config": {
            "value_mb": example["peak_rss_mb"],
            "target": f"< {RSS_TARGET_MB:.0f} MB",
            "pass": example["peak_rss_mb"] < RSS_TARGET_MB,
        },
    }
    return {
        "settings": {
            "updates": args.updates,
            "rate": args.rate,
            "duration": args.duration,
            "command": args.command,
            "chats": len(USERS),
            **machine(args.load_before),
        },
        "baseline": asdict(baseline),
        "fleetbridge": asdict(fleet),
        "fleetbridge_example_config": example,
        "fleetbridge_memory": memory,
        "throughput_ratio": ratio,
        "checks": checks,
    }


def print_table(results: dict[str, Any]) -> None:
    s = results["settings"]
    print(
        f"{s['command']} x {s['updates']} at once, then {s['rate']:g}/s for {s['duration']:g} s, "
        f"over {s['chats']} private chats; {s['cpus']} CPUs, load {s['load_before']:.2f} before, "
        f"Python {s['python']}"
    )
    header = (
        f"{'bot':<14} {'updates/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'CPU ms/upd':>11} {'idle CPU %':>11} {'peak RSS MB':>12}"
    )
    print(header)
    print("-" * len(header))
    for key in ("baseline", "fleetbridge"):
        r = results[key]
        print(
            f"{r['bot']:<14} {r['throughput_per_s']:>10.1f} {r['p50_ms']:>8.1f} "
            f"{r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} "
            f"{r['bot_cpu_ms_per_update']:>11.2f} {r['idle_cpu_pct']:>11.1f} "
            f"{r['peak_rss_mb']:>12.1f}"
        )
    b, f = results["baseline"], results["fleetbridge"]
    print(
        f"fleetbridge/baseline: throughput {results['throughput_ratio']:.2f}x, "
        f"p50 {f['p50_ms'] / b['p50_ms']:.2f}x, p99 {f['p99_ms'] / b['p99_ms']:.2f}x"
    )
    print(
        f"achieved push rate: baseline {b['rate_achieved']:.1f}/s, "
        f"fleetbridge {f['rate_achieved']:.1f}/s; echo replies paired out of order: "
        f"{b['mismatched_pairs']} of {b['rate_updates']}"
    )
    print(
        f"server CPU ms/update (this process, throughput phase): baseline "
        f"{b['server_cpu_ms_per_update']:.2f}, fleetbridge {f['server_cpu_ms_per_update']:.2f}"
    )
    e = results["fleetbridge_example_config"]
    print(
        f"fleet run with config.example.toml: peak RSS {e['peak_rss_mb']:.1f} MB, "
        f"idle CPU {e['idle_cpu_pct']:.1f} %"
    )
    m = results["fleetbridge_memory"]
    print(
        f"fleet run peak RSS: idle {m['idle_mb']:.1f} MB, after {m['storm']:.0f} updates at once "
        f"{m['storm_mb']:.1f} MB ({m['storm_mb'] - m['idle_mb']:+.1f}, "
        f"{m['storm_mb'] / m['idle_mb']:.2f}x), after a /costs chart {m['costs_mb']:.1f} MB "
        f"({m['costs_mb'] - m['idle_mb']:+.1f}, {m['costs_mb'] / m['idle_mb']:.2f}x)"
    )
    c = results["checks"]
    print()
    p99 = c["p99_latency"]
    print(f"{verdict(p99['pass'])} p99 latency {p99['value_ms']:.1f} ms ({p99['target']})")
    tp = c["throughput"]
    print(f"{verdict(tp['pass'])} throughput {tp['ratio']:.0%} of baseline ({tp['target']})")
    growth = c["peak_rss_growth"]
    print(
        f"{verdict(growth['pass'])} peak RSS growth after the storm and the chart: "
        f"{growth['value_mb']:+.1f} MB ({growth['target']})"
    )
    for key, label in (
        ("peak_rss_test_config", "test config"),
        ("peak_rss_example_config", "config.example.toml"),
    ):
        rss = c[key]
        print(
            f"{verdict(rss['pass'])} peak RSS of fleet run, {label}: "
            f"{rss['value_mb']:.1f} MB ({rss['target']})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__)
    parser.add_argument("--updates", type=int, default=500, help="throughput burst (500)")
    parser.add_argument("--rate", type=float, default=100.0, help="updates/s, latency (100)")
    parser.add_argument("--duration", type=float, default=5.0, help="latency seconds (5)")
    parser.add_argument(
        "--example-seconds",
        type=float,
        default=5.0,
        help="how long config.example.toml's fleet run polls before its RSS is read (5)",
    )
    parser.add_argument(
        "--command",
        default="/status",
        help="what the people send (/status); e.g. /whoami to leave the database out",
    )
    parser.add_argument(
        "--storm", type=int, default=2000, help="updates at once in the memory steps (2000)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_py_spy(parser, "profile fleet run's measured phases with py-spy")
    args = parse_args(parser, argv)
    if args.updates < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--updates, --rate and --duration must be positive")
    args.load_before = os.getloadavg()[0]  # other work on the machine skews every number
    # This process (the server and the pusher) is the instrument: see `run` on its collector.
    return run(benchmark(args), print_table, as_json=args.json, interrupted="bots stopped")


if __name__ == "__main__":
    sys.exit(main())
