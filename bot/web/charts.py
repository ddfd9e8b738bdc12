"""The Costs page's chart: spend per day per agent as an SVG built on the server (bars stacked
by agent), so the page needs no script and no image rendering."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from html import escape

from storage import usage

WIDTH, HEIGHT, LEFT, BOTTOM = 760, 240, 48, 24
COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def daily_svg(daily: dict[str, dict[date, Decimal]], month: date) -> str:
    days = usage.month_days(month)
    agents = sorted(daily)
    totals = [sum((daily[a].get(d, Decimal(0)) for a in agents), Decimal(0)) for d in days]
    top = float(max(totals, default=Decimal(0))) or 1.0
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - 8
    bar = plot_w / max(len(days), 1)
    height = HEIGHT + 20 * len(agents)
    scale = f"${top:,.2f}" if top >= 1 else f"${top:.4f}"  # the top of the bars, in USD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img"'
        f' aria-label="Spend per day, {month:%B %Y}" class="chart">',
        f'<text x="0" y="14" font-size="11">{scale}</text>',
        f'<line x1="{LEFT}" y1="{8 + plot_h}" x2="{WIDTH - 8}" y2="{8 + plot_h}" stroke="#888"/>',
    ]
    for i, day in enumerate(days):
        y = float(8 + plot_h)
        for j, agent in enumerate(agents):
            value = float(daily[agent].get(day, Decimal(0)))
            if value <= 0:
                continue
            h = value / top * plot_h
            y = y - h
            parts.append(
                f'<rect x="{LEFT + i * bar + 1:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{COLORS[j % len(COLORS)]}">'
                f"<title>{escape(agent)} {day:%d %b}: ${value:,.2f}</title></rect>"
            )
        if day.day in (1, 8, 15, 22, 29):
            parts.append(
                f'<text x="{LEFT + i * bar:.1f}" y="{HEIGHT - 6}" font-size="10">{day.day}</text>'
            )
    for j, agent in enumerate(agents):
        y = HEIGHT + 14 + 20 * j
        parts.append(
            f'<rect x="{LEFT}" y="{y - 10}" width="12" height="12" '
            f'fill="{COLORS[j % len(COLORS)]}"/>'
            f'<text x="{LEFT + 18}" y="{y}" font-size="12">{escape(agent)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
