"""/costs [YYYY-MM]: what each agent spent in a month, against its budget, with a chart.

The table (calls, tokens, USD, share of the budget) is one message; the chart of spend per day
per agent and running totals against budgets follows as a photo, drawn by `bot.charts` in a
child process (this process never loads matplotlib). A month without calls is one sentence.
`fleet costs` prints the same table, or CSV (`bot.costs.month_report`, `bot.views.costs`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiogram.filters import CommandObject
from aiogram.types import BufferedInputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import charts
from bot.config import Config, Role
from bot.costs import month_report
from bot.views import costs as views
from bot.views.text import esc
from handlers.common import usage
from handlers.registry import Routes, command
from storage import usage as spend

router = Routes(__name__)


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
            problem = views.month_problem(
                arg, err.out_of_range, spend.FIRST_MONTH, spend.LAST_MONTH
            )
            await message.answer(f"{problem}\n{usage('costs', '[YYYY-MM]')}")
            return
    else:
        month = spend.month_of()
    report = await month_report(session, month, config)
    if report.total.usd == 0 and report.total.calls == 0:
        await message.answer(views.no_spend(month))
        return
    daily = await spend.daily_spend(session, month)
    await message.answer(views.message(report, config.tz))
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
        caption=views.chart_caption(month),
    )
