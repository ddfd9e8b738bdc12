"""PNG charts for Telegram, drawn with matplotlib in a child process.

matplotlib costs the process that imports it about 100 MB for good (issue 18.14), so the bot
never imports it: `render_spend` runs `python -m bot.charts` with the data as JSON on stdin and
reads the PNG from stdout, within `TIMEOUT` seconds. The drawing itself (`spend_per_day`) is a pure
function of its data, tested in-process.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from integrations.process import environment

MAX_SERIES = 8  # agents drawn by name; the rest are summed as "others"
TIMEOUT = 60.0  # seconds a chart may take to draw (a cold matplotlib import on a slow disk)


class ChartError(Exception):
    """The chart could not be drawn; the message says why, for the person who asked."""


def spend_per_day(
    daily: Mapping[str, Mapping[date, Decimal]],
    month: date,
    through: date,
    budgets: Mapping[str, Decimal | None] | None = None,
    fleet_budget: Decimal | None = None,
) -> bytes:
    """Two panels for the days of `month` up to `through` (the days that have passed): stacked
    bars of USD per day, one colour per agent; below, each agent's running total with its
    monthly budget as a dashed line of the same colour, and the fleet's running total (with
    the fleet budget, if any). PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    budgets = budgets or {}
    first = month.replace(day=1)
    days = [first + timedelta(days=i) for i in range((through - first).days + 1)]
    totals = {agent: sum(by_day.values(), Decimal(0)) for agent, by_day in daily.items()}
    ranked = sorted(totals, key=lambda agent: (-totals[agent], agent))
    series: dict[str, list[float]] = {}
    limits: dict[str, float] = {}
    for agent in ranked[:MAX_SERIES]:
        series[agent] = [float(daily[agent].get(day, 0)) for day in days]
        budget = budgets.get(agent)
        if budget is not None:
            limits[agent] = float(budget)
    if len(ranked) > MAX_SERIES:
        rest = ranked[MAX_SERIES:]
        series[f"{len(rest)} others"] = [
            float(sum((daily[agent].get(day, Decimal(0)) for agent in rest), Decimal(0)))
            for day in days
        ]

    figure = Figure(figsize=(9, 7.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    per_day, running = figure.subplots(2, 1, sharex=True, height_ratios=[1, 1.2])
    positions = [day.day for day in days]
    dollars = FuncFormatter(lambda value, _: f"${value:,.2f}")
    bottom = [0.0] * len(days)
    colours: dict[str, Any] = {}  # matplotlib's colour of each agent's bars
    for agent, values in series.items():
        bars = per_day.bar(positions, values, bottom=bottom, label=agent, width=0.8)
        colours[agent] = bars.patches[0].get_facecolor() if bars.patches else "grey"
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    per_day.set_title(f"Spend per day, {first:%B %Y}")
    per_day.set_ylabel("USD per day")
    per_day.yaxis.set_major_formatter(dollars)
    per_day.grid(axis="y", alpha=0.3)

    for agent, values in series.items():
        running.plot(positions, _cumulative(values), color=colours[agent], linewidth=1.5)
        if agent in limits:
            running.axhline(limits[agent], color=colours[agent], linestyle="--", linewidth=1)
    running.plot(positions, _cumulative(bottom), color="black", linewidth=2.2, label="fleet total")
    if fleet_budget is not None:
        running.axhline(
            float(fleet_budget), color="black", linestyle="--", linewidth=1, label="fleet budget"
        )
    running.set_title("Running total this month (dashed: monthly budget)")
    running.set_xlabel("day")
    running.set_ylabel("USD")
    running.yaxis.set_major_formatter(dollars)
    running.set_xlim(0.4, len(days) + 0.6)
    running.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=16))
    running.grid(axis="y", alpha=0.3)
    running.set_ylim(bottom=0)

    handles, labels = per_day.get_legend_handles_labels()
    more, names = running.get_legend_handles_labels()
    if handles or more:
        # Top of the stack first, as the bars read; then the totals.
        figure.legend(
            [*handles[::-1], *more],
            [*labels[::-1], *names],
            loc="outside right upper",
            fontsize="small",
            frameon=False,
        )
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _cumulative(values: list[float]) -> list[float]:
    out: list[float] = []
    total = 0.0
    for value in values:
        total += value
        out.append(total)
    return out


def _encode(
    daily: Mapping[str, Mapping[date, Decimal]],
    month: date,
    through: date,
    budgets: Mapping[str, Decimal | None],
    fleet_budget: Decimal | None,
) -> bytes:
    return json.dumps(
        {
            "month": month.isoformat(),
            "through": through.isoformat(),
            "daily": {
                agent: {day.isoformat(): str(usd) for day, usd in by_day.items()}
                for agent, by_day in daily.items()
            },
            "budgets": {a: str(b) for a, b in budgets.items() if b is not None},
            "fleet_budget": str(fleet_budget) if fleet_budget is not None else None,
        }
    ).encode()


def _decode(data: dict[str, Any]) -> bytes:
    return spend_per_day(
        {
            agent: {date.fromisoformat(day): Decimal(usd) for day, usd in by_day.items()}
            for agent, by_day in data["daily"].items()
        },
        date.fromisoformat(data["month"]),
        date.fromisoformat(data["through"]),
        {agent: Decimal(usd) for agent, usd in data["budgets"].items()},
        Decimal(data["fleet_budget"]) if data["fleet_budget"] is not None else None,
    )


async def render_spend(
    daily: Mapping[str, Mapping[date, Decimal]],
    month: date,
    through: date,
    budgets: Mapping[str, Decimal | None],
    fleet_budget: Decimal | None = None,
) -> bytes:
    """`spend_per_day` drawn by a child process (`python -m bot.charts`), so this process
    never loads matplotlib. ChartError when the child fails or takes over `TIMEOUT` seconds."""
    payload = _encode(daily, month, through, budgets, fleet_budget)
    async with _ONE_AT_A_TIME:
        return await _draw(payload)


# Each child holds matplotlib (~100 MB) and a CPU core while it draws: a burst of /costs
# draws one chart after another instead of starting a child per request.
_ONE_AT_A_TIME = asyncio.Semaphore(1)


async def _draw(payload: bytes) -> bytes:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.charts",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(),  # a chart needs none of the fleet's secrets
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            png, errors = await child.communicate(payload)
    except TimeoutError:
        raise ChartError(f"drawing took longer than {TIMEOUT:.0f} s") from None
    finally:
        if child.returncode is None:  # timed out or cancelled: no child outlives its request
            child.kill()
            await child.wait()
    if child.returncode != 0 or not png.startswith(b"\x89PNG"):
        last = errors.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ChartError(f"the chart process failed ({last[0][:200]})")
    return png


def main() -> None:
    """`python -m bot.charts`: a chart's data as JSON on stdin, its PNG on stdout."""
    sys.stdout.buffer.write(_decode(json.load(sys.stdin)))


if __name__ == "__main__":
    main()
