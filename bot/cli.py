"""The `fleet` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
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
        "status": _status,
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
        prog="fleet",
        description="Run a fleet of AI agents from Telegram.",
        epilog=(
            "New here? `fleet init DIR` writes a config and workspaces, `fleet check-config "
            "--config DIR/fleet.toml` says what is left to fill in, and `fleet run --config "
            "DIR/fleet.toml` starts the bot. `fleet COMMAND --help` explains each command."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common], help="poll Telegram, run jobs, deliver the outbox")
    sub.add_parser("migrate", parents=[common], help="upgrade the database schema")
    check = sub.add_parser(
        "check-config",
        parents=[common],
        help='print "ok" or every problem (exit 2 on errors; warnings alone exit 0)',
    )
    check.add_argument(
        "--offline",
        action="store_true",
        help="do not resolve ${VAR} or *_file secrets, nor look for an Anthropic key "
        "(to check a config away from the machine that runs it)",
    )
    init = sub.add_parser("init", help="write a config and example workspaces")
    init.add_argument("dir", nargs="?", type=Path, default=Path("."))
    send = sub.add_parser(
        "send", parents=[common], help="queue a message to a feed (delivered by `fleet run`)"
    )
    where = send.add_mutually_exclusive_group(required=True)
    where.add_argument("--feed", help="alerts, triage, approvals or activity")
    where.add_argument("--chat", type=int, help="a chat id")
    send.add_argument("--key", help="dedup key: a second send with the same key is dropped")
    send.add_argument(
        "--html",
        action="store_true",
        help="the text is Telegram HTML already (checked before it is queued; exit 2 if invalid)",
    )
    send.add_argument("text", help='the message; "-" reads standard input')
    costs = sub.add_parser(
        "costs", parents=[common], help="spend per agent in a month, against budgets"
    )
    costs.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
    costs.add_argument("--csv", action="store_true", help="CSV instead of a table")
    sub.add_parser(
        "status", parents=[common], help="the nodes sharing the database and what each runs"
    )
    watchdog = sub.add_parser(
        "watchdog", parents=[common], help="check the fleet from outside (for a systemd timer)"
    )
    watchdog.add_argument(
        "--once", action="store_true", required=True, help="check once and exit (1: problems)"
    )
    config_cmd = sub.add_parser("config", parents=[common], help="rollback: the last good config")
    config_cmd.add_argument(
        "action", choices=["rollback"], help="rollback: restore the last-known-good file"
    )
    systemd = sub.add_parser(
        "systemd", parents=[common], help="print systemd units for the bot and the watchdog"
    )
    systemd.add_argument(
        "--user",
        type=_user_name,
        default="fleet",
        help="the service user the units run as (default: fleet)",
    )
    return parser


def _user_name(text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a user name like fleet")
    return text


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from bot.app import EXIT_CONFIG, run_fleet
    from bot.config_check import startup_warnings

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.secret_values(), logging.DEBUG if args.verbose else logging.INFO)
    for line in startup_warnings(config):
        log.warning("config: %s (see `fleet check-config`)", line)
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
    from bot.config_check import check_config

    report = check_config(args.config, offline=args.offline)
    for line in [*report.errors, *report.warnings]:
        print(line, file=sys.stderr)
    if report.errors:
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
    config = args.dir / "fleet.toml"
    print(
        f"wrote {len(written)} files under {args.dir}. Next:\n"
        f"  1. Edit {config}: your Telegram id under [[people]] (@userinfobot tells you\n"
        "     yours) and your group's chat id under [feeds] (or remove [feeds] for now).\n"
        "  2. Put the bot's token from @BotFather in TELEGRAM_BOT_TOKEN and your Anthropic\n"
        "     key in ANTHROPIC_API_KEY (export them; under systemd, in its EnvironmentFile).\n"
        f"  3. Check, then start: fleet check-config --config {config}\n"
        f"                        fleet run --config {config}"
    )
    return 0


def _send(args: argparse.Namespace) -> int:
    from bot.views.text import esc, html_problem
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
    # Checked now, not at delivery: a refused message would otherwise show only in /outbox.
    problem = html_problem(text) if args.html else None
    if problem is not None:
        print(f"not sent: Telegram would refuse this HTML: {problem}", file=sys.stderr)
        return 2
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
    from bot.costs import month_report
    from bot.views.costs import cli_table, csv_text
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
        return csv_text(found) if args.csv else cli_table(found)

    sys.stdout.write(asyncio.run(report()))
    return 0


def _status(args: argparse.Namespace) -> int:

    from bot.views.nodes import node_lines
    from storage import nodes
    from storage.db import Database
    from storage.models import utcnow

    config = _load(args.config)
    if config is None:
        return 2
    configure_logging(config.secret_values())

    async def report() -> list[str]:
        db = Database(config.database.url)
        db.redact_with(Redactor(config.secret_values()))
        try:
            await db.migrate()
            async with db.session() as session:
                rows = await nodes.all_nodes(session)
                in_flight = await nodes.runs_in_flight(session, rows)
        finally:
            await db.dispose()
        renew_every = config.node.renew_every
        alive = nodes.alive_within(renew_every)
        return node_lines(rows, in_flight, config, config.tz, utcnow(), alive)

    print("\n".join(asyncio.run(report())))
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
    from bot.config import read_config, validate_config
    from bot.systemd import render

    # Offline: the units are written where the secrets need not be (they are in ENV_FILE).
    try:
        checked = validate_config(read_config(args.config)[1], args.config, offline=True)
    except ConfigError as err:
        checked_lines = err.problems
    else:
        checked_lines = checked.lines()
        if not checked_lines and checked.config is not None:
            sys.stdout.write(render(checked.config, user=args.user))
            return 0
    for line in checked_lines:
        print(line, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
