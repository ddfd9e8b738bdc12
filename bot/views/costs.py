"""A month of spend as people read it: the /costs message and the `fleet costs` table (calls,
tokens, USD, share of the budget), its CSV, and the answers to a month that is not one.

`CostReport` is built by `bot.costs.month_report`; its rows are `storage.usage.Row`s, read
here only through the `SpendRow` protocol (views import no storage queries).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Protocol

from bot.views.text import TELEGRAM_LIMIT, clip, esc, money, percent, usd, when, zone_name

AGENT_WIDTH = 14
MESSAGE_ROOM = TELEGRAM_LIMIT - 300  # the table's share of one message, after title and notes


class SpendRow(Protocol):
    """One agent's month (or the total): calls, tokens by kind, USD."""

    @property
    def agent(self) -> str: ...
    @property
    def calls(self) -> int: ...
    @property
    def input(self) -> int: ...
    @property
    def output(self) -> int: ...
    @property
    def cache_write(self) -> int: ...
    @property
    def cache_read(self) -> int: ...
    @property
    def usd(self) -> Decimal: ...
    @property
    def tokens(self) -> int: ...


@dataclass(frozen=True)
class CostReport:
    """A month of spend: one row per agent (configured agents without calls included), their
    total, the budgets in force now, and the fleet's."""

    month: date
    rows: Sequence[SpendRow]
    total: SpendRow
    budgets: Mapping[str, Decimal | None]
    fleet_budget: Decimal | None


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


def _line(row: SpendRow, budget: Decimal | None) -> str:
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


def cli_table(report: CostReport) -> str:
    """What `fleet costs` prints."""
    return f"Costs {report.month:%Y-%m} (UTC)\n" + "\n".join(table_lines(report)) + "\n"


def month_problem(arg: str, out_of_range: bool, first: date, last: date) -> str:
    """Why `arg` is not a month /costs can show."""
    shown = esc(clip(arg, 40))
    if not out_of_range:
        return f"{shown} is not a month like 2026-11."
    return f"{shown} is outside the months this fleet knows ({first:%Y-%m} to {last:%Y-%m})."


def no_spend(month: date) -> str:
    return f"No spend in {month:%B %Y}: no model call was recorded."


def message(report: CostReport, tz: tzinfo) -> str:
    """The /costs message: the table (cheapest agents folded to fit) and what it counts."""
    table = "\n".join(table_lines(report, room=MESSAGE_ROOM))
    notes = "Tokens: input + output + cache. Budget: share of the monthly budget in force now"
    notes += " (total: the fleet's)." if report.fleet_budget is not None else "."
    notes += "\n" + month_note(tz)
    return f"<b>Costs {report.month:%B %Y}</b>\n<pre>{esc(table)}</pre>\n{notes}"


def chart_caption(month: date) -> str:
    return f"Spend per day and running totals against budgets, {month:%B %Y}"


def month_note(tz: tzinfo) -> str:
    """Months and days are counted from midnight UTC, as budgets are; say when that is here."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if zone_name(tz, midnight) == "UTC":
        return "Days and months run from midnight UTC, as budgets count them."
    here = when(midnight, tz, midnight.astimezone(tz))
    return f"Days and months run from midnight UTC ({here}), as budgets count them."
