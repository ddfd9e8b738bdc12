"""The pages of the site: the templates, and one handler per page (fleet, activity, tasks,
a task, approvals, incidents, costs, jobs), each reading the shared database."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import jinja2
from aiohttp import web

from bot.config import Person
from bot.views.text import actor_name, plain, usd, when, zone_note
from bot.web import charts, queries
from bot.web.context import CONFIG, DB, HERE, PERSON, STATE, _int
from storage import tasks


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["usd"] = usd
    env.filters["plain"] = plain
    return env


ENV = _templates()


def _page(
    template: str,
    person: Person | None,
    request: web.Request,
    *,
    status: int = 200,
    **context: Any,
) -> web.Response:
    config = request.app[CONFIG]
    tz = config.tz
    people = {p.telegram_id: p.name for p in config.people}
    body = ENV.get_template(template).render(
        person=person,
        when=lambda moment: when(moment, tz, zone=False),
        who=lambda actor: actor_name(actor, people),
        zone=zone_note(tz),
        **context,
    )
    return web.Response(text=body, content_type="text/html", charset="utf-8", status=status)


async def fleet_page(request: web.Request) -> web.Response:
    async with request.app[DB].session() as session:
        agents = await queries.fleet(session, request.app[CONFIG])
    upcoming = request.app[STATE].next_runs()
    for agent in agents:
        agent.next_heartbeat = upcoming.get(f"heartbeat:{agent.id}")
    return _page(
        "fleet.html", request[PERSON], request, title="Fleet", active="fleet", agents=agents
    )


async def activity_page(request: web.Request) -> web.Response:
    agent = request.query.get("agent", "")[:32]
    before = _int(request.query.get("before"))
    async with request.app[DB].session() as session:
        lines = await queries.activity(session, agent=agent, before=before)
    agents = [a.id for a in request.app[CONFIG].agents]
    return _page(
        "activity.html",
        request[PERSON],
        request,
        title="Activity",
        active="activity",
        lines=lines,
        agent=agent,
        agents=agents,
        newest=lines[0].id if lines else 0,
        next_before=lines[-1].id if len(lines) == queries.PAGE else None,
    )


async def tasks_page(request: web.Request) -> web.Response:
    status = request.query.get("status", "")
    if status and status not in tasks.STATUSES:
        raise web.HTTPBadRequest(text=f"unknown status; one of {', '.join(tasks.STATUSES)}")
    before = _int(request.query.get("before"))
    async with request.app[DB].session() as session:
        columns = await queries.board(session, status=status, before=before)
    return _page(
        "tasks.html",
        request[PERSON],
        request,
        title="Tasks",
        active="tasks",
        columns=columns,
        selected=status,
    )


async def task_page(request: web.Request) -> web.Response:
    task_id = _int(request.match_info["task_id"])
    page = None
    if task_id is not None:
        async with request.app[DB].session() as session:
            page = await queries.task_page(session, task_id)
    if page is None:
        raise web.HTTPNotFound(text="no such task")
    return _page(
        "task.html",
        request[PERSON],
        request,
        title=f"Task #{page.task.id}",
        active="tasks",
        page=page,
    )


async def approvals_page(request: web.Request) -> web.Response:
    async with request.app[DB].session() as session:
        pending, decided = await queries.approvals(session)
    return _page(
        "approvals.html",
        request[PERSON],
        request,
        title="Approvals",
        active="approvals",
        pending=pending,
        decided=decided,
    )


async def incidents_page(request: web.Request) -> web.Response:
    async with request.app[DB].session() as session:
        live, resolved = await queries.incident_lists(session)
    return _page(
        "incidents.html",
        request[PERSON],
        request,
        title="Incidents",
        active="incidents",
        live=live,
        resolved=resolved,
    )


async def costs_page(request: web.Request) -> web.Response:
    async with request.app[DB].session() as session:
        costs = await queries.costs(session)
    chart = charts.daily_svg(costs.daily, costs.month)
    total = sum((row.usd for row in costs.table), Decimal(0))
    last_total = sum((row.usd for row in costs.last_table), Decimal(0))
    return _page(
        "costs.html",
        request[PERSON],
        request,
        title="Costs",
        active="costs",
        costs=costs,
        chart=chart,
        total=total,
        last_total=last_total,
    )


async def jobs_page(request: web.Request) -> web.Response:
    async with request.app[DB].session() as session:
        beats = await queries.job_beats(session)
        findings = await queries.watchdog_findings(session)
    return _page(
        "jobs.html",
        request[PERSON],
        request,
        title="Jobs",
        active="jobs",
        beats=beats,
        age=queries.age_seconds,
        upcoming=request.app[STATE].next_runs(),
        findings=findings,
    )


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


ENV.filters["age"] = fmt_age
