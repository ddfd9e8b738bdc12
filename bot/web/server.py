"""The web server inside `fleet run`: pages, server-sent events, /metrics, /healthz, hooks.

Read-only: every action stays in Telegram behind its role checks. No page and no data without
a session, except /metrics and /healthz from `[web] metrics_from` and the hooks (each with
its source's bearer token). Sign-in: `/web` in a private chat with the bot answers with a
one-time link; its page posts the link's token back (a link preview fetching the URL does not
use it up) and gets a signed, HttpOnly, SameSite=Strict session cookie.

Several nodes: today one `fleet run` process serves a database (the poller lock refuses a
second), so the page is served by that process. Every page reads only the shared database, so
a node that serves it elsewhere would show the same data; /metrics's poll age and 429 count
are the serving process's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from sqlalchemy import text

from bot.config import Config, Person
from bot.polling import PollMonitor
from bot.views.text import actor_name, plain, usd, when, zone_note
from bot.web import charts, hooks, metrics, queries
from bot.web.auth import LINK, SESSION, Signer
from storage import tasks
from storage import web as web_store
from storage.db import Database
from storage.models import is_row_id

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "fleet_session"
SSE_POLL = 1.0  # seconds between reads of new activity lines for the live page
SSE_KEEPALIVE = 15.0

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PUBLIC = ("/signin", "/static/", "/healthz", "/metrics", "/hooks/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
DB: web.AppKey[Database] = web.AppKey("db", Database)
SIGNER: web.AppKey[Signer] = web.AppKey("signer", Signer)
PERSON: web.RequestKey[Person] = web.RequestKey("person", Person)
STATE: web.AppKey[WebState] = web.AppKey("state", object)  # type: ignore[arg-type]


class WebState:
    """What the pages read besides the database: the poll monitor and sender of this process
    (for /healthz and /metrics), and the event set at shutdown (live streams end)."""

    def __init__(
        self,
        *,
        poll_monitor: PollMonitor | None = None,
        rate_limited: Callable[[], int] = lambda: 0,
        next_runs: Callable[[], dict[str, datetime | None]] = dict,
    ) -> None:
        self.poll_monitor = poll_monitor
        self.rate_limited = rate_limited
        # Scheduled job id -> its next run (the scheduler lives in this process's memory).
        self.next_runs = next_runs
        self.started = time.monotonic()
        self.stopping = asyncio.Event()


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


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as err:
        response = err
        _headers(response)
        raise
    _headers(response)
    return response


def _headers(response: web.StreamResponse) -> None:
    if response.prepared:  # a live stream sets its own before it starts
        return
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")


def _person(request: web.Request) -> Person | None:
    """The signed-in person, looked up in the config at every request."""
    token = request.cookies.get(COOKIE, "")
    claims = request.app[SIGNER].check(token, SESSION) if token else None
    if claims is None:
        return None
    person = request.app[CONFIG].person(claims.person_id)
    if person is None or person.role != claims.role:
        return None
    return person


def _from_metrics_network(request: web.Request, config: Config) -> bool:
    try:
        address = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(net, strict=False) for net in config.web.metrics_from
    )


@web.middleware
async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if path.startswith(PUBLIC) and path not in ("/metrics", "/healthz"):
        return await handler(request)
    person = _person(request)
    if path in ("/metrics", "/healthz"):
        if person is None and not _from_metrics_network(request, request.app[CONFIG]):
            raise web.HTTPForbidden(text="metrics and health are served to metrics_from only")
        return await handler(request)
    if person is None:
        response = _page("signed_out.html", None, request, status=401, title="Sign in", active="")
        if COOKIE in request.cookies:
            response.del_cookie(COOKIE, path="/")
        return response
    request[PERSON] = person
    return await handler(request)


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


# --- sign-in -----------------------------------------------------------------------------------


async def signin_form(request: web.Request) -> web.Response:
    token = request.query.get("t", "")
    valid = request.app[SIGNER].check(token, LINK) is not None
    return _page(
        "signin.html", None, request, title="Sign in", active="", token=token, valid=valid
    )


async def signin(request: web.Request) -> web.Response:
    form = await request.post()
    token = str(form.get("t", ""))
    config = request.app[CONFIG]
    claims = request.app[SIGNER].check(token, LINK)
    person = config.person(claims.person_id) if claims is not None else None
    if claims is None or person is None:
        return _refused(request, "This sign-in link is not valid or has expired.")
    async with request.app[DB].session() as session:
        fresh = await web_store.use_signin(session, claims.token_id, claims.person_id)
    if not fresh:
        return _refused(request, "This sign-in link was used already; each link works once.")
    hours = config.web.session_hours
    cookie = request.app[SIGNER].issue(SESSION, person.telegram_id, hours * 3600, role=person.role)
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=hours * 3600,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=config.web.base_url().startswith("https://"),
    )
    log.info("web: %s signed in", person.name)
    raise response


def _refused(request: web.Request, why: str) -> web.Response:
    return _page("signed_out.html", None, request, status=403, title="Sign in", active="", why=why)


async def signout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/signin")
    response.del_cookie(COOKIE, path="/")
    raise response


# --- pages -------------------------------------------------------------------------------------


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


async def events(request: web.Request) -> web.StreamResponse:
    """New activity and alert lines as server-sent events, oldest first."""
    agent = request.query.get("agent", "")[:32]
    last = _int(request.query.get("after")) or _int(request.headers.get("Last-Event-ID")) or 0
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the page was closed or left
        await _stream(request, response, agent, last)
    return response


async def _stream(
    request: web.Request, response: web.StreamResponse, agent: str, last: int
) -> None:
    state = request.app[STATE]
    tz = request.app[CONFIG].tz
    quiet = 0.0
    while not state.stopping.is_set():
        if _person(request) is None:  # removed from the config, or the session ran out
            break
        async with request.app[DB].session() as session:
            lines = await queries.activity(session, agent=agent, after=last)
        for line in reversed(lines):
            data = {
                "id": line.id,
                "feed": line.feed,
                "when": when(line.created_at, tz, zone=False),
                "text": plain(line.text),
            }
            await response.write(f"id: {line.id}\ndata: {json.dumps(data)}\n\n".encode())
            last = max(last, line.id)
        quiet = 0.0 if lines else quiet + SSE_POLL
        if quiet >= SSE_KEEPALIVE:
            await response.write(b": keep-alive\n\n")
            quiet = 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), SSE_POLL)


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


# --- machines: metrics, health, hooks ---------------------------------------------------------


async def metrics_endpoint(request: web.Request) -> web.Response:
    state = request.app[STATE]
    monitor = state.poll_monitor
    poll_age = None
    if monitor is not None:
        poll_age = time.monotonic() - (monitor.last_poll_monotonic or state.started)
    async with request.app[DB].session() as session:
        snap = await metrics.snapshot(
            session, request.app[CONFIG], poll_age=poll_age, rate_limited=state.rate_limited()
        )
    return web.Response(body=metrics.render(snap), headers={"Content-Type": metrics.CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers and (with polling) a poll completed within 3x the polling
    timeout; 503 saying what is wrong otherwise."""
    problems = []
    try:
        async with request.app[DB].session() as session:
            await session.execute(text("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - any database failure is "unhealthy"
        problems.append(f"database: {type(err).__name__}")
    state = request.app[STATE]
    if state.poll_monitor is not None:
        last = state.poll_monitor.last_poll_monotonic or state.started
        limit = 3 * request.app[CONFIG].telegram.polling_timeout
        if time.monotonic() - last > limit:
            problems.append(f"telegram: no completed poll for over {limit} s")
    body = {"status": "ok" if not problems else "unhealthy", "problems": problems}
    return web.json_response(body, status=200 if not problems else 503)


def _hook(kind: str) -> Handler:
    parse = hooks.alertmanager_alerts if kind == "alertmanager" else hooks.simple_alerts

    async def receive(request: web.Request) -> web.Response:
        config = request.app[CONFIG]
        name = request.match_info["source"]
        source = next((s for s in config.web.sources if s.id == name and s.kind == kind), None)
        if source is None:
            raise web.HTTPNotFound(text=f"no {kind} source with this id in [[web.sources]]")
        if not hooks.authorized(source, request.headers.get("Authorization", "")):
            raise web.HTTPUnauthorized(text="missing or wrong bearer token for this source")
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        try:
            alerts = parse(source, body)
        except hooks.HookError as err:
            raise web.HTTPBadRequest(text=str(err)) from None
        counts = await hooks.apply(request.app[DB], source, alerts)
        return web.json_response(counts)

    return receive


def _int(value: str | None) -> int | None:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    number = int(value)
    return number if is_row_id(number) else None


def make_app(
    config: Config, db: Database, signer: Signer, state: WebState | None = None
) -> web.Application:
    app = web.Application(middlewares=[security_headers, require_session], client_max_size=2**20)
    app[CONFIG] = config
    app[DB] = db
    app[SIGNER] = signer
    app[STATE] = state or WebState()
    app.router.add_get("/", fleet_page)
    app.router.add_get("/activity", activity_page)
    app.router.add_get("/events", events)
    app.router.add_get("/tasks", tasks_page)
    app.router.add_get("/tasks/{task_id}", task_page)
    app.router.add_get("/approvals", approvals_page)
    app.router.add_get("/incidents", incidents_page)
    app.router.add_get("/costs", costs_page)
    app.router.add_get("/jobs", jobs_page)
    app.router.add_get("/signin", signin_form)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/hooks/alertmanager/{source}", _hook("alertmanager"))
    app.router.add_post("/hooks/alert/{source}", _hook("alert"))
    app.router.add_static("/static", HERE / "static")
    return app


async def signer_for(config: Config, db: Database) -> Signer:
    """The signer of `[web] secret`, else of the key generated once in the database."""
    if config.web.secret is not None:
        return Signer(config.web.secret.get_secret_value())
    async with db.session() as session:
        return Signer(await web_store.signing_key(session))


class WebServer:
    """Owns the site: `start` binds `[web] listen`, `stop` ends live streams and closes it."""

    def __init__(self, config: Config, db: Database, state: WebState) -> None:
        self.config = config
        self.db = db
        self.state = state
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        signer = await signer_for(self.config, self.db)
        app = make_app(self.config, self.db, signer, self.state)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.web.host, self.config.web.port)
        await site.start()
        log.info(
            "web: serving on %s (open %s)", self.config.web.listen, self.config.web.base_url()
        )

    async def stop(self) -> None:
        self.state.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


ENV.filters["age"] = fmt_age
