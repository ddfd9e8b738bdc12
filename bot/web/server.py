"""The web server inside `fleet run`: the app (security headers, the route table) and
`WebServer`, which starts and stops it. The pages are in bot.web.pages, sign-in and sessions in
bot.web.sessions, the server-sent events in bot.web.events, /metrics, /healthz and the hooks in
bot.web.machines.

Read-only: every action stays in Telegram behind its role checks. No page and no data without
a session, except /metrics and /healthz from `[web] metrics_from` and the hooks (each with
its source's bearer token). Sign-in: `/web` in a private chat with the bot answers with a
one-time link; its page posts the link's token back (a link preview fetching the URL does not
use it up) and gets a signed, HttpOnly, SameSite=Strict session cookie.

Several nodes: on PostgreSQL several `fleet run` nodes share the database, and each with
`[web] listen` may serve the page. Every page reads only the shared database, so each node
shows the same data; /metrics's poll age and 429 count are the serving node's own.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.config import Config
from bot.web.auth import Signer
from bot.web.context import CONFIG, CSP, DB, HERE, SIGNER, STATE, Handler
from bot.web.context import WebState as WebState  # bot.app builds it with the server
from bot.web.events import events
from bot.web.machines import _hook, healthz, metrics_endpoint
from bot.web.pages import (
    activity_page,
    approvals_page,
    costs_page,
    fleet_page,
    incidents_page,
    jobs_page,
    task_page,
    tasks_page,
)
from bot.web.sessions import require_session, signer_for, signin, signin_form, signout
from storage.db import Database

log = logging.getLogger(__name__)


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
