"""The endpoints machines call: /metrics (Prometheus), /healthz, and the alert hooks of
`[[web.sources]]` (Alertmanager and the small alert shape)."""

from __future__ import annotations

import time

from aiohttp import web
from sqlalchemy import text

from bot.web import hooks, metrics
from bot.web.context import CONFIG, DB, STATE, Handler


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
