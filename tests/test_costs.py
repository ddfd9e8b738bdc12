"""/costs and `fleet costs`: the month table and the chart, from usage rows written straight
into the fleet's database; the usage queries on PostgreSQL too."""

from __future__ import annotations

import csv
import io
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete

from bot import charts
from bot.views.text import visible_len
from storage import usage
from storage.db import Database
from storage.models import Usage
from tests import pg
from tests.botapi_server import BotAPIServer
from tests.fleet import OPERATOR, VIEWER, FleetProcess, query, run_cli, write_config

AMSTERDAM = ZoneInfo("Europe/Amsterdam")  # the zone of tests.fleet.write_config

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
budget_usd_month = 20

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-sonnet-4-6"
budget_usd_month = 5

[[agents]]
id = "writer"
reports_to = "hub"
workspace = "workspaces/writer"
model = "claude-haiku-4-5"
"""

OCTOBER = [  # (agent, UTC time, input, output, cache write, cache read, USD, status)
    ("hub", datetime(2026, 10, 1, 0, 0, 1, tzinfo=UTC), 10_000, 2_000, 0, 0, "0.06", "ok"),
    ("hub", datetime(2026, 10, 1, 23, 59, 59, tzinfo=UTC), 5_000, 1_000, 0, 0, "0.03", "ok"),
    ("hub", datetime(2026, 10, 15, 12, 0, tzinfo=UTC), 200_000, 8_000, 0, 50_000, "0.735", "ok"),
    ("coder", datetime(2026, 10, 15, 13, 0, tzinfo=UTC), 1_000, 500, 4_000, 0, "0.0255", "ok"),
    ("coder", datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), 0, 0, 0, 0, "0", "error"),
    ("coder", datetime(2026, 10, 31, 23, 0, tzinfo=UTC), 1_000_000, 0, 0, 0, "3", "ok"),
    # Outside October on both sides: not counted.
    ("hub", datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC), 1, 1, 0, 0, "100", "ok"),
    ("hub", datetime(2026, 11, 1, 0, 0, tzinfo=UTC), 1, 1, 0, 0, "100", "ok"),
]


def sql_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_rows(config: Path, rows: list[tuple[Any, ...]]) -> None:
    for agent, when, inp, out, write, read, usd, status in rows:
        query(
            config,
            "INSERT INTO usage (agent_id, purpose, model, profile, input_tokens, output_tokens, "
            "cache_write_tokens, cache_read_tokens, cost_usd, price_known, latency_ms, "
            "fallback_used, status, created_at) VALUES "
            "(?, 'turn', 'claude-sonnet-4-6', 'primary', ?, ?, ?, ?, ?, 1, 5, 0, ?, ?)",
            agent,
            inp,
            out,
            write,
            read,
            usd,
            status,
            sql_time(when),
        )


async def migrated(tmp_path: Path, api_base: str = "http://127.0.0.1:9") -> Path:
    config = write_config(tmp_path, api_base, agents=AGENTS)
    code, out = await run_cli("migrate", "--config", str(config))
    assert code == 0, out
    return config


async def test_fleet_costs_prints_the_month_as_csv_and_as_a_table(tmp_path: Path) -> None:
    config = await migrated(tmp_path)
    insert_rows(config, OCTOBER)
    query(
        config,
        "INSERT INTO agent_state (agent_id, paused, budget_usd_month, updated_at) "
        "VALUES ('coder', 0, 2.5, '2026-10-01 00:00:00.000000')",
    )

    code, out = await run_cli("costs", "--config", str(config), "--month", "2026-10", "--csv")
    assert code == 0, out
    rows = list(csv.reader(io.StringIO(out)))
    assert rows == [
        [
            "month", "agent", "calls", "input_tokens", "output_tokens", "cache_write_tokens",
            "cache_read_tokens", "usd", "budget_usd", "budget_used_pct",
        ],
        # Most expensive first; coder's budget is the database's $2.50, not the config's $5.
        ["2026-10", "coder", "2", "1001000", "500", "4000", "0", "3.025500", "2.50", "121.0"],
        ["2026-10", "hub", "3", "215000", "11000", "0", "50000", "0.825000", "20.00", "4.1"],
        ["2026-10", "writer", "0", "0", "0", "0", "0", "0.000000", "", ""],
        ["2026-10", "total", "5", "1216000", "11500", "4000", "50000", "3.850500", "", ""],
    ]  # fmt: skip

    code, out = await run_cli("costs", "--config", str(config), "--month", "2026-10")
    assert code == 0, out
    assert out.splitlines() == [
        "Costs 2026-10 (UTC)",
        "agent           calls  tokens       USD budget",
        "coder               2    1.0M      3.03   121%",
        "hub                 3  276.0k      0.83     4%",
        "writer              0       0      0.00      -",
        "total               5    1.3M      3.85      -",
    ]

    code, out = await run_cli("costs", "--config", str(config), "--month", "October")
    assert code == 2 and '"October" is not a month like 2026-11' in out


async def test_costs_sends_a_table_and_a_chart_the_bot_api_accepts(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = await migrated(tmp_path, botapi.base_url)
    insert_rows(config, [row for row in OCTOBER if row[1].month == 10])
    now = datetime.now(UTC)
    moment = max(now - timedelta(seconds=5), usage.month_start(now))
    this_month: list[tuple[Any, ...]] = [
        ("hub", moment, 1_000, 100, 0, 0, "12.5", "ok"),
        ("coder", moment, 1_000, 100, 0, 0, "4.75", "ok"),
    ]
    # Far more agents than one message holds one line each: the cheapest are folded.
    this_month += [
        (f"temp-{i:03d}", moment, 10, 10, 0, 0, f"0.{i:03d}", "ok") for i in range(1, 151)
    ]
    insert_rows(config, this_month)
    fleet = FleetProcess(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)

    after = botapi.mark()
    botapi.push_message(VIEWER, "/costs")
    [table] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == VIEWER, after=after
    )
    text = table.params["text"]
    assert text.startswith(f"<b>Costs {now:%B %Y}</b>\n<pre>")
    # The config's zone is Europe/Amsterdam: when a UTC day starts is said in it, once.
    assert text.endswith(
        "Days and months run from midnight UTC (01:00 CET), as budgets count them."
    )
    assert visible_len(text) <= 4096
    lines = table.parsed["text"][0].splitlines()
    assert lines[1] == "agent           calls  tokens       USD budget"
    assert lines[2] == "hub                 1    1.1k     12.50    63%"
    assert lines[3] == "coder               1    1.1k      4.75    95%"
    folded = next(line for line in lines if line.startswith("… "))
    assert folded.endswith("more agents, $" + folded.rsplit("$", 1)[1])
    total = Decimal("12.5") + Decimal("4.75") + sum(Decimal(f"0.{i:03d}") for i in range(1, 151))
    assert (
        next(line for line in lines if line.startswith("total")).split()[3]
        == f"{total.quantize(usage.CENT, ROUND_HALF_UP)}"
    )

    [photo] = await botapi.wait_for_call(
        "sendPhoto", lambda c: c.params["chat_id"] == VIEWER, after=after, timeout=60
    )
    upload = photo.params["photo"]
    assert upload.filename == f"costs-{now:%Y-%m}.png"
    assert upload.data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", upload.data[16:24])
    assert (width, height) == (990, 792)
    assert photo.result["photo"][0]["file_size"] == len(upload.data)
    assert photo.params["caption"] == (
        f"Spend per day and running totals against budgets, {now:%B %Y}"
    )
    # Drawn by a child process: the bot never loads matplotlib (issue 18.14: +100 MB for good).
    assert fleet.proc is not None
    assert "matplotlib" not in mapped_files(fleet.proc.pid)

    # A past month; a month with no spend; not a month.
    reply = await _reply(botapi, VIEWER, "/costs 2026-10")
    assert "coder               2    1.0M      3.03    61%" in reply  # the config's $5 budget
    await botapi.wait_for_call(
        "sendPhoto", lambda c: "October 2026" in c.params["caption"], timeout=60
    )
    # No spend: one message that says so, no table of zeros and no second message.
    after = botapi.mark()
    assert await _reply(botapi, OPERATOR, "/costs 2020-01") == (
        "No spend in January 2020: no model call was recorded."
    )
    await _reply(botapi, OPERATOR, "/whoami")  # answered in order: nothing else came between
    sent = [c for c in botapi.calls[after:] if c.method == "sendMessage"]
    assert [c.params["chat_id"] for c in sent] == [OPERATOR, OPERATOR]
    assert await _reply(botapi, VIEWER, "/costs last") == (
        "last is not a month like 2026-11.\nUsage: /costs [YYYY-MM]"
    )
    assert not [c for c in botapi.calls if c.method == "sendPhoto" and not c.ok]
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


def mapped_files(pid: int) -> str:
    """The files a Linux process has mapped (its loaded libraries); empty elsewhere."""
    maps = Path(f"/proc/{pid}/maps")
    return maps.read_text() if maps.exists() else ""


async def _reply(botapi: BotAPIServer, user: int, text: str) -> str:
    after = botapi.mark()
    botapi.push_message(user, text)
    [sent] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == user, after=after
    )
    return str(sent.params["text"])


async def _usage_queries(db: Database) -> None:
    async with db.session() as session:
        for agent, when, inp, out, write, read, usd, status in OCTOBER:
            session.add(
                Usage(
                    agent_id=agent,
                    model="claude-sonnet-4-6",
                    profile="primary",
                    input_tokens=inp,
                    output_tokens=out,
                    cache_write_tokens=write,
                    cache_read_tokens=read,
                    cost_usd=Decimal(str(usd)),
                    status=status,
                    created_at=when,
                )
            )
    october = date(2026, 10, 1)
    async with db.session() as session:
        table = await usage.month_table(session, october)
        daily = await usage.daily_spend(session, october)
        start, end = usage.month_bounds(october)
        since = await usage.spend_since(session, start, until=end)
        only_hub = await usage.spend_since(session, start, ["hub"], until=end)
        fleet = await usage.fleet_spend_since(session, datetime(2026, 11, 1, tzinfo=UTC))
    assert [(r.agent, r.calls, r.tokens, r.usd) for r in table] == [
        ("coder", 2, 1_005_500, Decimal("3.0255")),
        ("hub", 3, 276_000, Decimal("0.825")),
    ]
    assert daily == {
        "hub": {
            date(2026, 10, 1): Decimal("0.09"),
            date(2026, 10, 15): Decimal("0.735"),
        },
        "coder": {date(2026, 10, 15): Decimal("0.0255"), date(2026, 10, 31): Decimal(3)},
    }
    assert since == {"hub": Decimal("0.825"), "coder": Decimal("3.0255")}
    assert only_hub == {"hub": Decimal("0.825")}
    assert fleet == Decimal(100)
    async with db.session() as session:
        await session.execute(delete(Usage))


async def test_usage_queries_on_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    try:
        await db.migrate()
        await _usage_queries(db)
    finally:
        await db.dispose()


async def test_usage_queries_on_postgresql() -> None:
    async with pg.temporary_database("costs") as url:
        db = Database(url)
        try:
            await db.migrate()
            await _usage_queries(db)
        finally:
            await db.dispose()


def test_months() -> None:
    assert usage.month_start(datetime(2026, 11, 30, 23, 59, tzinfo=UTC)) == datetime(
        2026, 11, 1, tzinfo=UTC
    )
    # 00:30 on Dec 1 in Amsterdam is still November in UTC.
    amsterdam = timezone(timedelta(hours=1))
    assert usage.month_of(datetime(2026, 12, 1, 0, 30, tzinfo=amsterdam)) == date(2026, 11, 1)
    assert usage.month_bounds(date(2026, 12, 15)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert len(usage.month_days(date(2028, 2, 1))) == 29
    assert usage.parse_month("2026-02") == date(2026, 2, 1)


async def test_chart_is_drawn_by_a_child_process_for_the_days_that_passed() -> None:
    daily = {
        "hub": {date(2026, 10, 1): Decimal("1.5"), date(2026, 10, 9): Decimal("4")},
        "coder": {date(2026, 10, 2): Decimal("0.25")},
    }
    budgets: dict[str, Decimal | None] = {"hub": Decimal(20), "coder": None}
    png = await charts.render_spend(daily, date(2026, 10, 1), date(2026, 10, 10), budgets)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # The same drawing in-process (the child runs exactly this), with a fleet budget.
    again = charts.spend_per_day(
        daily, date(2026, 10, 1), date(2026, 10, 10), budgets, Decimal(30)
    )
    assert again.startswith(b"\x89PNG\r\n\x1a\n")
