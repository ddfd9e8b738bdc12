"""Long polling that is watched: completed polls are recorded, failures are logged once a
minute instead of once per retry, and a poll loop that stops completing is restarted.

aiogram's polling loop catches every error and retries forever, so a stuck or failing loop is
invisible from outside. The request middleware below sees every getUpdates; the supervisor
restarts polling when none has completed for three polling timeouts and posts an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from aiogram import Bot, Dispatcher
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramConflictError, TelegramUnauthorizedError
from aiogram.methods import GetUpdates, Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Update

log = logging.getLogger(__name__)


# Updates handled at once; more wait for a free slot before they are fetched.
MAX_CONCURRENT_UPDATES = 32


class Throttle:
    """Lets a message through at most once per `period` seconds per key."""

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.period:
            return False
        self._last[key] = now
        return True


class PollMonitor(BaseRequestMiddleware):
    """A bot-session middleware that records every completed getUpdates."""

    def __init__(
        self,
        before_poll: Callable[[], Awaitable[bool]] | None = None,
        on_updates: Callable[[list[Update]], Awaitable[None]] | None = None,
    ) -> None:
        # Asked before each getUpdates whether this node may poll (bot.leader: the lock
        # connection still answers); False stops the call.
        self.before_poll = before_poll
        # Given each batch of updates before aiogram handles it (bot.update_ledger records
        # them before the next getUpdates confirms them to Telegram).
        self.on_updates = on_updates
        self.last_poll_at: datetime | None = None
        self.last_poll_monotonic: float | None = None
        self.polls = 0
        self.unauthorized = False
        self._throttle = Throttle(60.0)
        # aiogram builds Response[T] per call and pydantic caches it only weakly, so a garbage
        # collection makes the next call rebuild it (~5 ms); holding them keeps them built.
        self._response_types: dict[type[Any], Any] = {}

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        # A stored flag, not isinstance narrowing: narrowing `method` to GetUpdates would
        # no longer match make_request's generic parameter.
        if type(method) not in self._response_types:
            self._response_types[type(method)] = Response[method.__returning__]  # type: ignore[name-defined]
        polling = isinstance(method, GetUpdates)
        if not polling:
            return await make_request(bot, method)
        if self.before_poll is not None and not await self.before_poll():
            raise NotLeading("this node no longer holds the poller lock; not polling")
        try:
            response = await make_request(bot, method)
        except TelegramConflictError:
            if self._throttle.allow("409"):
                log.error(
                    "Telegram answered 409 Conflict: another process polls this bot token "
                    "(not one sharing this database, or its lock would have stopped us). "
                    "Logged once a minute while it lasts."
                )
            raise
        except TelegramUnauthorizedError:
            self.unauthorized = True
            raise
        except Exception as err:
            if self._throttle.allow(type(err).__name__):
                log.warning(
                    "getUpdates failed: %s: %s (retrying; logged once a minute)",
                    type(err).__name__,
                    err,
                )
            raise
        if self.on_updates is not None:
            # aiogram's middleware chain hands back the result, not the Response its types say.
            received: Any = response
            batch = received.result if isinstance(received, Response) else received
            if batch:
                await self.on_updates(cast(list[Update], batch))
        self.last_poll_at = datetime.now(UTC)
        self.last_poll_monotonic = time.monotonic()
        self.polls += 1
        return response


class PollingSupervisor:
    """Runs dp.start_polling, restarting it when it stalls or dies."""

    def __init__(
        self,
        dp: Dispatcher,
        bot: Bot,
        monitor: PollMonitor,
        *,
        polling_timeout: int,
        on_stall: Callable[[float], Awaitable[None]],
        check_every: float | None = None,
        max_concurrent_updates: int = MAX_CONCURRENT_UPDATES,
    ) -> None:
        self.dp = dp
        self.max_concurrent_updates = max_concurrent_updates
        self.bot = bot
        self.monitor = monitor
        self.polling_timeout = polling_timeout
        self.stall_after = 3.0 * polling_timeout
        self.check_every = check_every or max(1.0, polling_timeout / 2)
        self.on_stall = on_stall
        self.restarts = 0

    async def run(self, stop: asyncio.Event, **workflow: Any) -> None:
        backoff = 1.0
        while not stop.is_set():
            started = time.monotonic()
            task = asyncio.create_task(
                self.dp.start_polling(
                    self.bot,
                    polling_timeout=self.polling_timeout,
                    handle_signals=False,
                    close_bot_session=False,
                    # A storm of updates waits in Telegram's queue, not as thousands of tasks
                    # (each with its update, session and reply) in this process's memory.
                    tasks_concurrency_limit=self.max_concurrent_updates,
                    **workflow,
                )
            )
            reason = await self._watch(task, stop, started)
            if reason == "stop":
                await self._stop(task)
                return
            if reason == "unauthorized":
                await self._stop(task)
                raise TelegramTokenRejected
            if reason == "stall":
                silent = time.monotonic() - (self.monitor.last_poll_monotonic or started)
                log.error(
                    "polling stalled: no completed getUpdates for %.0f s; restarting", silent
                )
                await self._stop(task)
                self.restarts += 1
                await self.on_stall(silent)
                continue
            if time.monotonic() - started > 60:
                backoff = 1.0  # it had been working: this is a new failure, not a repeat
            # The polling task ended by itself (for instance getMe failed at start).
            error = task.exception() if not task.cancelled() else None
            if isinstance(error, TelegramUnauthorizedError):
                raise TelegramTokenRejected from error
            log.warning(
                "polling ended (%s); starting again in %.0f s",
                f"{type(error).__name__}: {error}" if error else "no error",
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, 60.0)

    async def _watch(self, task: asyncio.Task[None], stop: asyncio.Event, started: float) -> str:
        while True:
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                {task, stopper}, timeout=self.check_every, return_when=asyncio.FIRST_COMPLETED
            )
            stopper.cancel()
            if stop.is_set():
                return "stop"
            if task in done:
                return "ended"
            if self.monitor.unauthorized:
                return "unauthorized"
            last = self.monitor.last_poll_monotonic
            reference = max(last, started) if last is not None else started
            if time.monotonic() - reference > self.stall_after:
                return "stall"

    async def _stop(self, task: asyncio.Task[None]) -> None:
        if not task.done():
            try:
                await self.dp.stop_polling()
            except RuntimeError:
                task.cancel()  # polling had not started its loop yet
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as err:  # noqa: BLE001 - already reported by the loop; stopping anyway
            log.debug("polling task ended with %s during stop", type(err).__name__)


class NotLeading(Exception):
    """A getUpdates was stopped: this node lost the poller lock (see bot.leader)."""


class TelegramTokenRejected(Exception):
    """Telegram answered 401: the bot token is wrong or revoked."""
