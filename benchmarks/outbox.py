"""Outbox delivery of `fleet run` against Telegram's limits, enforced by the local Bot API server.

Run from the repository root::

    python benchmarks/outbox.py [--messages N] [--chats C] [--groups G] [--json]

N messages (1,000) are queued to C chats (50), G of them groups (10), before `fleet run`
starts; every tenth message to a private chat and one per group is long enough to go out in
three parts. The local Bot API server (`tests.botapi_server`, in this process) enforces
Telegram's limits (30 messages/s overall, 1/s per chat, 20/min per group): a message over a
limit is answered 429 and counted as a pacing problem.

1. straight: the time from the first message's arrival to the last one's, against the minimum
   the limits allow for these messages (the larger of the overall limit and the slowest chat);
2. kill -9: the same from scratch, but `fleet run` is killed with SIGKILL when half of the
   messages are out and started again; the time is the same span less the gap between the last
   message before the kill and the first one after the restart.

Each phase checks that nothing was lost (every row `sent`, every message in its chat in order)
and counts the messages shown twice (only a part in flight at the kill may be). Results are a
report: the exit code is 0 whether the targets pass or not, 1 when the measurement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (  # before the project's imports: it puts the root on sys.path
    BenchmarkError,
    cancel_on_sigterm,
    check_alive,
    log_tail,
    machine,
    parse_args,
    parser_for,
    run,
    stop_process,
    verdict,
)

from bot.pacing import GLOBAL_PER_SECOND, GROUP_PER_MINUTE, GROUP_WINDOW, PER_CHAT_INTERVAL
from bot.views.text import split_html
from storage import outbox
from storage.db import Database
from tests.botapi_server import BotAPIServer, PacingLimits
from tests.fleet import FLEET, TOKEN, fleet_env, write_config

TIME_TARGET = 1.15  # within 15% of the minimum the limits allow
TOLERANCE = 0.05  # the server forgives this much of each interval and window (network jitter)
DELIVERY_TIMEOUT = 900.0


@dataclass
class Phase:
    name: str
    messages: int
    parts: int
    minimum_s: float
    seconds: float = 0.0
    ratio: float = 0.0
    downtime_s: float = 0.0
    pacing_problems: int = 0
    lost: int = 0
    shown_twice: int = 0
    examples: list[str] = field(default_factory=list)


def plan(messages: int, chats: int, groups: int) -> list[tuple[int, str]]:
    """(chat, text) in queue order, round-robin over the chats. A group gets at most 15
    messages (one of them long: 17 parts, inside its 20 a minute), the private chats the rest;
    every tenth message to a private chat is long. A long message goes out in three parts."""
    group_ids = [-1009000 - i for i in range(1, groups + 1)]
    private_ids = [3000 + i for i in range(1, chats - groups + 1)]
    per_group = min(15, messages // chats)
    counts = dict.fromkeys(group_ids, per_group) | dict.fromkeys(private_ids, 0)
    for n in range(messages - per_group * groups):
        counts[private_ids[n % len(private_ids)]] += 1
    order = sorted(
        ((i, index, chat) for index, (chat, n) in enumerate(counts.items()) for i in range(n))
    )
    out: list[tuple[int, str]] = []
    for i, _, chat in order:
        long = (i % 10 == 9) if chat > 0 else i == 3
        text = f"#{i} to {chat}"
        if long:
            # Three parts: lines of 100 characters, about 9,000 in all.
            text += "\n" + "\n".join("y" * 100 for _ in range(90))
        out.append((chat, text))
    return out


def minimum_seconds(parts_per_chat: dict[int, int]) -> float:
    """The least time from the first message to the last that the limits allow."""
    total = sum(parts_per_chat.values())
    overall = float((total - 1) // GLOBAL_PER_SECOND)
    slowest = 0.0
    for chat, n in parts_per_chat.items():
        times: list[float] = []
        for k in range(n):
            t = times[-1] + PER_CHAT_INTERVAL if times else 0.0
            if chat < 0 and k >= GROUP_PER_MINUTE:
                t = max(t, times[k - GROUP_PER_MINUTE] + GROUP_WINDOW)
            times.append(t)
        slowest = max(slowest, times[-1] if times else 0.0)
    return max(overall, slowest)


async def queue(folder: Path, messages: list[tuple[int, str]]) -> None:
    db = Database(f"sqlite+aiosqlite:///{folder / 'fleet.db'}")
    try:
        await db.migrate()
        async with db.session() as session:
            for chat, text in messages:
                await outbox.enqueue(session, outbox.Destination(chat), text)
    finally:
        await db.dispose()


def sent_rows(folder: Path) -> int:
    with sqlite3.connect(folder / "fleet.db", timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0])


class Fleet:
    def __init__(self, folder: Path, config: Path, name: str) -> None:
        self.log = folder / f"{name}.log"
        self.config = config
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(FLEET),
                "run",
                "--config",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=fleet_env(),
            )

    def check(self) -> None:
        check_alive(self.proc, self.name, self.log)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        code = await stop_process(self.proc, self.name)
        if code not in (0, None, -9):
            raise BenchmarkError(f"{self.name} exited {code}:\n{log_tail(self.log)}")


async def wait_sent(folder: Path, count: int, fleet: Fleet) -> None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while sent_rows(folder) < count:
        fleet.check()
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"{sent_rows(folder)} of {count} rows sent after {DELIVERY_TIMEOUT:.0f} s:\n"
                f"{log_tail(fleet.log)}"
            )
        await asyncio.sleep(0.2)


async def phase(name: str, messages: list[tuple[int, str]], tmp: Path, *, kill: bool) -> Phase:
    folder = tmp / name
    folder.mkdir()
    parts: dict[int, int] = {}
    for chat, text in messages:
        parts[chat] = parts.get(chat, 0) + len(split_html(text))
    result = Phase(name, len(messages), sum(parts.values()), minimum_seconds(parts))
    async with BotAPIServer(TOKEN) as server:
        server.enforce_limits(PacingLimits(tolerance=TOLERANCE))
        config = write_config(folder, server.base_url, polling_timeout=2)
        await queue(folder, messages)
        first = Fleet(folder, config, "fleet")
        fleets = [first]
        try:
            await first.start()
            if kill:
                while len(server.calls_of("sendMessage")) < result.parts // 2:
                    first.check()
                    await asyncio.sleep(0.01)
                await first.kill()
                before = max(c.at for c in server.calls_of("sendMessage"))
                mark = server.mark()
                second = Fleet(folder, config, "fleet-restarted")
                fleets.append(second)
                await second.start()
                await wait_sent(folder, len(messages), second)
                after = min(
                    c.at for c in server.calls[mark:] if c.method == "sendMessage" and c.ok
                )
                result.downtime_s = after - before
            else:
                await wait_sent(folder, len(messages), first)
        finally:
            for fleet in fleets:
                await fleet.stop()
        sends = server.calls_of("sendMessage")
        result.seconds = max(c.at for c in sends) - min(c.at for c in sends) - result.downtime_s
        result.ratio = result.seconds / result.minimum_s
        result.pacing_problems = len(server.pacing_violations)
        result.examples = server.pacing_violations[:5]
        for chat in parts:
            got = [
                t.split("\n", 1)[0]
                for t in server.sent_texts(chat)
                if t.startswith("#")  # a message's first part; the others start with y
            ]
            want = [t.split("\n", 1)[0] for c, t in messages if c == chat]
            unique = list(dict.fromkeys(got))
            result.shown_twice += len(got) - len(unique)
            result.lost += len([t for t in want if t not in unique])
            if [t for t in unique if t in want] != want:
                raise BenchmarkError(f"chat {chat}: messages out of order: {unique[:10]}")
        result.lost += len(messages) - sent_rows(folder)
        if server.errors:
            raise BenchmarkError(f"the local Bot API server failed: {server.errors!r}")
    return result


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_sigterm()
    os.environ["TELEGRAM_BOT_TOKEN"] = TOKEN
    messages = plan(args.messages, args.chats, args.groups)
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-outbox-") as tmp_name:
        tmp = Path(tmp_name)
        for name, kill in (("straight", False), ("kill-9", True)):
            if name in args.phases:
                phases.append(await phase(name, messages, tmp, kill=kill))
    checks = {
        p.name: {
            "ratio": p.ratio,
            "target": f"<= {TIME_TARGET:.2f}x the minimum, 0 pacing problems, 0 lost",
            "pass": p.ratio <= TIME_TARGET and p.pacing_problems == 0 and p.lost == 0,
        }
        for p in phases
    }
    return {
        "settings": {
            "messages": args.messages,
            "chats": args.chats,
            "groups": args.groups,
            "tolerance_s": TOLERANCE,
            **machine(args.load_before),
        },
        "phases": [asdict(p) for p in phases],
        "checks": checks,
    }


def print_table(results: dict[str, Any]) -> None:
    s = results["settings"]
    print(
        f"{s['messages']} messages to {s['chats']} chats ({s['groups']} groups); "
        f"{s['cpus']} CPUs, load {s['load_before']:.2f} before, Python {s['python']}"
    )
    header = (
        f"{'phase':<9} {'parts':>6} {'minimum s':>10} {'took s':>8} {'ratio':>6} "
        f"{'downtime s':>11} {'pacing':>7} {'lost':>5} {'twice':>6}"
    )
    print(header)
    print("-" * len(header))
    for p in results["phases"]:
        print(
            f"{p['name']:<9} {p['parts']:>6} {p['minimum_s']:>10.1f} {p['seconds']:>8.1f} "
            f"{p['ratio']:>6.2f} {p['downtime_s']:>11.1f} {p['pacing_problems']:>7} "
            f"{p['lost']:>5} {p['shown_twice']:>6}"
        )
        for example in p["examples"]:
            print(f"    pacing problem: {example}")
    print()
    for name, check in results["checks"].items():
        print(f"{verdict(check['pass'])} {name}: {check['ratio']:.2f}x ({check['target']})")


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__)
    parser.add_argument("--messages", type=int, default=1000, help="messages queued (1000)")
    parser.add_argument("--chats", type=int, default=50, help="chats (50)")
    parser.add_argument("--groups", type=int, default=10, help="of them groups (10)")
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["straight", "kill-9"],
        choices=["straight", "kill-9"],
        help="which phases to run (both)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parse_args(parser, argv)
    if not 0 <= args.groups < args.chats or args.messages < args.chats:
        parser.error("need 0 <= --groups < --chats <= --messages")
    args.load_before = os.getloadavg()[0]
    return run(benchmark(args), print_table, as_json=args.json, interrupted="fleet stopped")


if __name__ == "__main__":
    sys.exit(main())
