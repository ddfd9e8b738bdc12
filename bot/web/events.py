"""The live activity page's feed: new activity and alert lines as server-sent events (/events),
read from the shared database every second until the page closes or the process stops."""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from bot.views.text import plain, when
from bot.web import queries
from bot.web.context import CONFIG, CSP, DB, STATE, _int
from bot.web.sessions import _person

SSE_POLL = 1.0  # seconds between reads of new activity lines for the live page
SSE_KEEPALIVE = 15.0


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
