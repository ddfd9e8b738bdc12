"""PNG charts for Telegram, drawn with matplotlib's Agg canvas.

No pyplot: a `Figure` drawn on its own `FigureCanvasAgg` shares no global state, so a chart can
be rendered in a worker thread (`asyncio.to_thread`) while the event loop goes on. matplotlib
is imported at the first chart; a process that never draws one never loads it.
"""

from __future__ import annotations

import io
from calendar import monthrange
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal

MAX_SERIES = 8  # agents drawn by name; the rest are summed as "others"


def spend_per_day(daily: Mapping[str, Mapping[date, Decimal]], month: date) -> bytes:
    """Stacked bars of USD per day of `month`, one colour per agent, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    first = month.replace(day=1)
    days = [first + timedelta(days=i) for i in range(monthrange(first.year, first.month)[1])]
    totals = {agent: sum(by_day.values(), Decimal(0)) for agent, by_day in daily.items()}
    ranked = sorted(totals, key=lambda agent: (-totals[agent], agent))
    series: dict[str, list[float]] = {}
    for agent in ranked[:MAX_SERIES]:
        series[agent] = [float(daily[agent].get(day, 0)) for day in days]
    if len(ranked) > MAX_SERIES:
        rest = ranked[MAX_SERIES:]
        series[f"{len(rest)} others"] = [
            float(sum((daily[agent].get(day, Decimal(0)) for agent in rest), Decimal(0)))
            for day in days
        ]

    figure = Figure(figsize=(9, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    positions = [day.day for day in days]
    bottom = [0.0] * len(days)
    for agent, values in series.items():
        axes.bar(positions, values, bottom=bottom, label=agent, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_title(f"Spend per day, {first:%B %Y} (UTC)")
    axes.set_xlabel("day")
    axes.set_ylabel("USD")
    axes.set_xlim(0.4, len(days) + 0.6)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=16))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"${value:,.2f}"))
    axes.grid(axis="y", alpha=0.3)
    if series:
        handles, labels = axes.get_legend_handles_labels()
        # Top of the stack first, as the bars read.
        figure.legend(
            handles[::-1], labels[::-1], loc="outside right upper", fontsize="small", frameon=False
        )
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
