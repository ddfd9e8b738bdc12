"""The nodes of the fleet as people read them (/status and `fleet status`): plain text, one
line per node; the Telegram handler escapes it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta, tzinfo

from bot.config import Config
from bot.views.text import when
from storage.models import Node


def node_lines(
    rows: Collection[Node],
    in_flight: Mapping[str, int],
    config: Config,
    tz: tzinfo,
    now: datetime,
    alive_within: timedelta,
) -> list[str]:
    """ "Nodes:" and one line per node: "• vps: leader, seen 17:50:03 CET, 2 runs in flight;
    may run all agents, checks site, no deploys". A cleanly stopped node says when it
    stopped; one that stopped renewing says since when it is silent. `in_flight`: running
    runs per node name."""
    if not rows:
        return ["Nodes: none registered"]
    lines = ["Nodes:"]
    for row in rows:
        if row.stopped_at is not None:
            lines.append(f"• {row.name}: stopped {when(row.stopped_at, tz, now)}")
            continue
        seen = when(row.last_seen, tz, now, seconds=True)
        state = f"SILENT since {seen}" if now - row.last_seen > alive_within else f"seen {seen}"
        count = in_flight.get(row.name, 0)
        runs = "1 run" if count == 1 else f"{count} runs"
        may_run = row.may_run or {}
        may = ", ".join(
            (
                _may("agents", may_run.get("agents", []), [a.id for a in config.agents]),
                _may("checks", may_run.get("checks", []), [c.id for c in config.checks]),
                _may("deploys", may_run.get("deploys", []), [d.id for d in config.deploys]),
            )
        )
        lines.append(f"• {row.name}: {row.role}, {state}, {runs} in flight; may run {may}")
    return lines


def _may(kind: str, ids: Collection[str], configured: Collection[str]) -> str:
    """ "all agents", "no checks" or "deploys site, www"."""
    if not ids:
        return f"no {kind}"
    if configured and set(configured) <= set(ids):
        return f"all {kind}"
    return f"{kind} {', '.join(sorted(ids))}"
