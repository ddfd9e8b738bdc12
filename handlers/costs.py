"""/costs [YYYY-MM]: what each agent spent in a month, against its budget, with a chart.

The table (calls, tokens, USD, share of the budget) is one message; the chart of spend per day
per agent and running totals against budgets follows as a photo, drawn by `bot.charts` in a
child process (this process never loads matplotlib). A month without calls is one sentence.
`fleet costs` prints the same table, or CSV, from `month_report` and `table_lines`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal

from aiogram.filters import CommandObject
from aiogram.types import BufferedInputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import charts
from bot.config import Config, Role
from bot.views.text import TELEGRAM_LIMIT, clip, esc, money, usd, when, zone_name
from handlers.budget import percent
from handlers.registry import Routes, command
from handlers.tasks import usage
from storage import usage as spend

router = Routes(__name__)

AGENT_WIDTH = 14
MESSAGE_ROOM = TELEGRAM_LIMIT - 300  # the table's share of one message, after title and notes


@dataclass(frozen=True)
class CostReport:
    """A month of spend: one row per agent (configured agents without calls included), the
    budgets in force now, and the fleet's."""

    month: date
    rows: list[spend.Row]
    budgets: dict[str, Decimal | None]
    fleet_budget: Decimal | None

    @property
    def total(self) -> spend.Row:
        return spend.Row(
            agent="total",
            calls=sum(row.calls for row in self.rows),
            input=sum(row.input for row in self.rows),
            output=sum(row.output for row in self.rows),
            cache_write=sum(row.cache_write for row in self.rows),
            cache_read=sum(row.cache_read for row in self.rows),
            usd=sum((row.usd for row in self.rows), Decimal(0)),
        )


async def month_report(session: AsyncSession, month: date, config: Config) -> CostReport:
    rows = await spend.month_table(session, month)
    seen = {row.agent for row in rows}
    rows += [
        spend.Row(agent.id, 0, 0, 0, 0, 0, Decimal(0))
        for agent in config.agents
        if agent.id not in seen
    ]
    configured = {agent.id: agent.budget_usd_month for agent in config.agents}
    fleet = config.budget.fleet_usd_month
    return CostReport(
        month=month,
        rows=rows,
        budgets=await spend.budgets(session, configured),
        fleet_budget=Decimal(str(fleet)) if fleet is not None else None,
    )


def compact(tokens: int) -> str:
    """12345 -> "12.3k"."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if tokens >= size:
            return f"{tokens / size:.1f}{suffix}"
    return str(tokens)


def _share(spent: Decimal, budget: Decimal | None) -> str:
    if budget is None:
        return "-"
    if budget == 0:
        return "0%" if spent == 0 else "over"
    return percent(spent, budget)


def _line(row: spend.Row, budget: Decimal | None) -> str:
    return (
        f"{clip(row.agent, AGENT_WIDTH):<{AGENT_WIDTH}} {row.calls:>6} {compact(row.tokens):>7} "
        f"{money(row.usd):>9} {_share(row.usd, budget):>6}"
    )


def table_lines(report: CostReport, room: int | None = None) -> list[str]:
    """The table as plain lines: a header, one line per agent, the total. With `room`
    (characters), the cheapest agents are folded into one line to fit."""
    header = f"{'agent':<{AGENT_WIDTH}} {'calls':>6} {'tokens':>7} {'USD':>9} {'budget':>6}"
    lines = [_line(row, report.budgets.get(row.agent)) for row in report.rows]
    total = _line(report.total, report.fleet_budget)
    if room is not None:
        kept = len(lines)
        while kept and sum(len(line) + 1 for line in [header, *lines[:kept], total]) + 60 > room:
            kept -= 1
        if kept < len(lines):
            rest = report.rows[kept:]
            cost = sum((row.usd for row in rest), Decimal(0))
            lines = [*lines[:kept], f"… {len(rest)} more agents, {usd(cost)}"]
    return [header, *lines, total]


def csv_text(report: CostReport) -> str:
    """The table as CSV: full token counts and USD to the micro-dollar."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "month",
            "agent",
            "calls",
            "input_tokens",
            "output_tokens",
            "cache_write_tokens",
            "cache_read_tokens",
            "usd",
            "budget_usd",
            "budget_used_pct",
        ]
    )
    budgeted = [(row, report.budgets.get(row.agent)) for row in report.rows]
    for row, budget in [*budgeted, (report.total, report.fleet_budget)]:
        share = f"{row.usd / budget * 100:.1f}" if budget else ""
        writer.writerow(
            [
                f"{report.month:%Y-%m}",
                row.agent,
                row.calls,
                row.input,
                row.output,
                row.cache_write,
                row.cache_read,
                f"{row.usd:.6f}",
                f"{budget:.2f}" if budget is not None else "",
                share,
            ]
        )
    return out.getvalue()


def _month_problem(arg: str, err: spend.MonthError) -> str:
    shown = esc(clip(arg, 40))
    if not err.out_of_range:
        return f"{shown} is not a month like 2026-11."
    first, last = f"{spend.FIRST_MONTH:%Y-%m}", f"{spend.LAST_MONTH:%Y-%m}"
    return f"{shown} is outside the months this fleet knows ({first} to {last})."


@command(router, "costs", Role.viewer, usage="[YYYY-MM]")
async def costs(
    message: Message, command: CommandObject, session: AsyncSession, config: Config
) -> None:
    """Spend per agent this month (or YYYY-MM), against budgets, with a chart per day"""
    arg = (command.args or "").strip()
    if arg:
        try:
            month = spend.parse_month(arg)
        except spend.MonthError as err:
            await message.answer(f"{_month_problem(arg, err)}\n{usage('costs', '[YYYY-MM]')}")
            return
    else:
        month = spend.month_of()
    report = await month_report(session, month, config)
    if report.total.usd == 0 and report.total.calls == 0:
        await message.answer(f"No spend in {month:%B %Y}: no model call was recorded.")
        return
    daily = await spend.daily_spend(session, month)
    table = "\n".join(table_lines(report, room=MESSAGE_ROOM))
    notes = "Tokens: input + output + cache. Budget: share of the monthly budget in force now"
    notes += " (total: the fleet's)." if report.fleet_budget is not None else "."
    notes += "\n" + month_note(config.tz)
    await message.answer(f"<b>Costs {month:%B %Y}</b>\n<pre>{esc(table)}</pre>\n{notes}")
    if not daily:
        return  # calls, but none cost anything: the table says so, a chart of zeros does not
    through = min(spend.month_days(month)[-1], datetime.now(UTC).date())
    try:
        png = await charts.render_spend(daily, month, through, report.budgets, report.fleet_budget)
    except charts.ChartError as err:
        await message.answer(f"The chart could not be drawn: {esc(str(err))}.")
        return
    await message.answer_photo(
        BufferedInputFile(png, filename=f"costs-{month:%Y-%m}.png"),
        caption=f"Spend per day and running totals against budgets, {month:%B %Y}",
    )


def month_note(tz: tzinfo) -> str:
    """Months and days are counted from midnight UTC, as budgets are; say when that is here."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if zone_name(tz, midnight) == "UTC":
        return "Days and months run from midnight UTC, as budgets count them."
    here = when(midnight, tz, midnight.astimezone(tz))
    return f"Days and months run from midnight UTC ({here}), as budgets count them."
