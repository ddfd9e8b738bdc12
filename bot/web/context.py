"""What every web handler reads from the app and the request: the app keys (config, database,
signer, the signed-in person, the process's `WebState`), the shared headers and paths, and the
parsing of a row id from a query string."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from aiohttp import web

from bot.config import Config, Person
from bot.polling import PollMonitor
from bot.web.auth import Signer
from storage.db import Database
from storage.models import is_row_id

HERE = Path(__file__).parent

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

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


def _int(value: str | None) -> int | None:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    number = int(value)
    return number if is_row_id(number) else None
