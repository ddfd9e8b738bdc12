"""The `fleet` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from bot.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from bot.logs import configure_logging
from bot.redact import Redactor

log = logging.getLogger("fleet")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "run": _run,
        "migrate": _migrate,
        "check-config": _check_config,
        "init": _init,
        "send": _send,
        "costs": _costs,
        "watchdog": _watchdog,
        "config": _config,
        "systemd": _systemd,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help="the config file (default: ./fleet.toml)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser = argparse.ArgumentParser(
        prog="fleet", description="Run a fleet of AI agents from Telegram."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common], help="poll Telegram, run jobs, deliver the outbox")
    sub.add_parser("migrate", parents=[common], help="upgrade the database schema")
    sub.add_parser("check-config", parents=[common], help='print "ok" or every config error')
    init = sub.add_parser("init", help="write a config and example workspaces")
    init.add_argument("dir", nargs="?", type=Path, default=Path("."))
    send = sub.add_parser(
        "send", parents=[common], help="queue a message to a feed (delivered by `fleet run`)"
    )
    where = send.add_mutually_exclusive_group(required=True)
    where.add_argument("--feed", help="alerts, triage, approvals or activity")
    where.add_argument("--chat", type=int, help="a chat id")
    send.add_argument("--key", help="dedup key: a second send with the same key is dropped")
    send.add_argument("--html", action="store_true", help="the text is HTML already")
    send.add_argument("text", help='the message; "-" reads standard input')
    costs = sub.add_parser(
        "costs", parents=[common], help="spend per agent in a month, against budgets"
    )
    costs.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
    costs.add_argument("--csv", action="store_true", help="CSV instead of a table")
    watchdog = sub.add_parser(
        "watchdog", parents=[common], help="check the fleet from outside (for a systemd timer)"
    )
    watchdog.add_argument(
        "--once", action="store_true", required=True, help="check once and exit (1: problems)"
    )
    config_cmd = sub.add_parser("config", parents=[common], help="config safety")
    config_cmd.add_argument(
        "action", choices=["rollback"], help="rollback: restore the last-known-good file"
    )
    sub.add_parser(
        "systemd", parents=[common], help="print systemd units for the bot and the watchdog"
    )
    return parser


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from bot.app import EXIT_CONFIG, run_fleet

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.secret_values(), logging.DEBUG if args.verbose else logging.INFO)
    return asyncio.run(run_fleet(config))


def _migrate(args: argparse.Namespace) -> int:
    from storage.db import Database

    config = _load(args.config)
    if config is None:
        return 2
    configure_logging(config.secret_values())

    async def migrate() -> None:
        db = Database(config.database.url)
        try:
            await db.migrate()
        finally:
            await db.dispose()

    asyncio.run(migrate())
    print("database is at the newest schema")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    if _load(args.config) is None:
        return 2
    print("ok")
    return 0


def _init(args: argparse.Namespace) -> int:
    from bot.scaffold import init

    try:
        written = init(args.dir)
    except FileExistsError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files under {args.dir}; edit {args.dir / 'fleet.toml'}")
    return 0


def _send(args: argparse.Namespace) -> int:
    from bot.text import esc
    from storage import outbox
    from storage.db import Database

    config = _load(args.config)
    if config is None:
        return 2
    configure_logging(config.secret_values())
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        print("nothing to send: the text is empty", file=sys.stderr)
        return 1
    if args.feed:
        feed = config.feed(args.feed)
        if feed is None:
            print(f"no feed named {args.feed!r} in {config.path} [feeds]", file=sys.stderr)
            return 1
        to = outbox.Destination(feed.chat_id, feed.topic, args.feed)
    else:
        to = outbox.Destination(args.chat)

    async def send() -> int | None:
        db = Database(config.database.url)
        db.redact_with(Redactor(config.secret_values()))
        try:
            await db.migrate()
            async with db.session() as session:
                return await outbox.enqueue(
                    session, to, text if args.html else esc(text), dedup_key=args.key
                )
        finally:
            await db.dispose()

    row = asyncio.run(send())
    print(f"queued as outbox {row}" if row else "already queued earlier (same --key); not again")
    return 0


def _costs(args: argparse.Namespace) -> int:
    from handlers.costs import csv_text, month_report, table_lines
    from storage import usage
    from storage.db import Database

    try:
        month = usage.parse_month(args.month) if args.month else usage.month_of()
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    config = _load(args.config)
    if config is None:
        return 2
    configure_logging(config.secret_values())

    async def report() -> str:
        db = Database(config.database.url)
        db.redact_with(Redactor(config.secret_values()))
        try:
            await db.migrate()
            async with db.session() as session:
                found = await month_report(session, month, config)
        finally:
            await db.dispose()
        if args.csv:
            return csv_text(found)
        return f"Costs {month:%Y-%m} (UTC)\n" + "\n".join(table_lines(found)) + "\n"

    sys.stdout.write(asyncio.run(report()))
    return 0


def _watchdog(args: argparse.Namespace) -> int:
    from bot.watchdog import once

    config = _load(args.config)
    if config is None:
        return 2
    configure_logging(config.secret_values())
    return asyncio.run(once(config))


def _config(args: argparse.Namespace) -> int:
    from bot.config_watch import rollback

    ok, said = rollback(args.config)
    print(said, file=sys.stdout if ok else sys.stderr)
    if ok and _load(args.config) is None:
        print("the restored file does not validate now (see above)", file=sys.stderr)
        return 2
    return 0 if ok else 1


def _systemd(args: argparse.Namespace) -> int:
    from bot.systemd import render

    sys.stdout.write(render(args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
