"""Delivers outbox rows to Telegram: in order per chat, paced, retried, split, resumable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from datetime import timedelta

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters

from bot.text import split_html
from storage import outbox
from storage.db import Database
from storage.models import Outbox, utcnow

log = logging.getLogger(__name__)

# Telegram's documented limits for bots.
PER_CHAT_INTERVAL = 1.0
GROUP_PER_MINUTE = 20
GLOBAL_PER_SECOND = 30


class Pacer:
    """Tracks recent sends and says how long a chat must wait before its next message."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}
        self._blocked_until: dict[int, float] = {}
        self._group: dict[int, deque[float]] = defaultdict(deque)
        self._all: deque[float] = deque()

    def wait_for(self, chat_id: int, now: float) -> float:
        waits = [
            self._last.get(chat_id, -1e9) + PER_CHAT_INTERVAL - now,
            self._blocked_until.get(chat_id, 0.0) - now,
        ]
        if chat_id < 0:  # groups, supergroups and channels have negative ids
            window = self._group[chat_id]
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= GROUP_PER_MINUTE:
                waits.append(window[0] + 60 - now)
        while self._all and self._all[0] <= now - 1:
            self._all.popleft()
        if len(self._all) >= GLOBAL_PER_SECOND:
            waits.append(self._all[0] + 1 - now)
        return max(0.0, *waits)

    def block(self, chat_id: int, until: float) -> None:
        """Telegram asked us to wait (429 retry_after) before writing to this chat again."""
        self._blocked_until[chat_id] = until

    def sent(self, chat_id: int, now: float) -> None:
        self._last[chat_id] = now
        if chat_id < 0:
            self._group[chat_id].append(now)
        self._all.append(now)


class Sender:
    """The only code that sends outbox rows. Run one per bot token (the poller lock holder)."""

    def __init__(
        self,
        bot: Bot,
        db: Database,
        *,
        max_attempts: int = 8,
        idle_poll: float = 1.0,
        max_backoff: float = 300.0,
    ) -> None:
        self.bot = bot
        self.db = db
        self.max_attempts = max_attempts
        self.idle_poll = idle_poll
        self.max_backoff = max_backoff
        self.pacer = Pacer()
        self.rate_limited = 0  # 429 answers so far (the web /metrics shows it)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Deliver now instead of at the next idle poll (after enqueueing in this process)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set. A send in flight finishes; the rest stays queued."""
        while not stop.is_set():
            try:
                delay = await self.deliver_due()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("outbox pass failed; retrying in %.0f s", self.idle_poll)
                delay = self.idle_poll
            self._wake.clear()
            waiters = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._wake.wait()),
            }
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def deliver_due(self) -> float:
        """One pass over the due head of each chat. Returns seconds until the next pass."""
        async with self.db.session() as session:
            rows = await outbox.due_heads(session, utcnow())
        delay = self.idle_poll
        for row in rows:
            wait = self.pacer.wait_for(row.chat_id, time.monotonic())
            if wait > 0:
                delay = min(delay, wait)
                continue
            await self._deliver(row)
            delay = min(delay, PER_CHAT_INTERVAL)
        async with self.db.session() as session:
            next_at = await outbox.next_due_at(session)
        if next_at is not None:
            delay = min(delay, max(0.0, (next_at - utcnow()).total_seconds()))
        return max(delay, 0.02)

    async def _deliver(self, row: Outbox) -> None:
        reply: ReplyParameters | None = None
        if row.edit_of or row.reply_to:
            async with self.db.session() as session:
                target = await outbox.sent_message_id(session, row.edit_of or row.reply_to or "")
            if target is not None and row.edit_of:
                if await self._edit(row, *target):
                    return
            elif target is not None:
                reply = ReplyParameters(message_id=target[1], allow_sending_without_reply=True)
        parts = split_html(row.text)
        ids = list(row.sent_message_ids or [])
        if row.in_flight_at is not None:
            log.warning(
                "outbox %d to chat %d: the process stopped while part %d was being sent at %s; "
                "Telegram may or may not have it, so it is sent again and may show twice",
                row.id,
                row.chat_id,
                row.parts_sent + 1,
                row.in_flight_at.isoformat(timespec="seconds"),
            )
        for index in range(row.parts_sent, len(parts)):
            last = index == len(parts) - 1
            async with self.db.session() as session:
                if not await outbox.begin_send(session, row.id, index):
                    return  # settled elsewhere (requeued, failed by hand) since it was read
            try:
                message = await self.bot.send_message(
                    chat_id=row.chat_id,
                    message_thread_id=row.topic,
                    text=parts[index],
                    reply_markup=_keyboard(row.buttons) if last else None,
                    reply_parameters=reply if index == 0 else None,
                )
            except TelegramRetryAfter as err:
                self.pacer.block(row.chat_id, time.monotonic() + err.retry_after)
                self.rate_limited += 1
                await self._defer(row, err.retry_after, f"429 retry after {err.retry_after}s")
                return
            except (TelegramServerError, TelegramNetworkError, TimeoutError) as err:
                await self._retry_or_fail(row, f"{type(err).__name__}: {err}")
                return
            except TelegramMigrateToChat as err:
                await self._fail(
                    row,
                    f"chat {row.chat_id} became supergroup {err.migrate_to_chat_id}; "
                    "update the feed's chat_id in the config",
                )
                return
            except (TelegramBadRequest, TelegramForbiddenError) as err:
                await self._fail(row, f"Telegram refused the message: {err.message}")
                return
            except TelegramAPIError as err:
                await self._retry_or_fail(row, f"{type(err).__name__}: {err.message}")
                return
            self.pacer.sent(row.chat_id, time.monotonic())
            ids.append(message.message_id)
            async with self.db.session() as session:
                await outbox.record_part(session, row.id, index, ids)
            if not last:
                # The next part of the same chat still obeys the per-chat pace.
                await asyncio.sleep(self.pacer.wait_for(row.chat_id, time.monotonic()))
        async with self.db.session() as session:
            await outbox.mark_sent(session, row.id)

    async def _edit(self, row: Outbox, chat_id: int, message_id: int) -> bool:
        """Edit the original message. False when it cannot be edited any more (deleted, too
        old): the caller then sends the row as a new message, so the news is not lost."""
        try:
            await self.bot.edit_message_text(
                chat_id=chat_id,
                message_id=message_id,
                text=split_html(row.text)[0],
                reply_markup=_keyboard(row.buttons),
            )
        except TelegramRetryAfter as err:
            self.pacer.block(row.chat_id, time.monotonic() + err.retry_after)
            self.rate_limited += 1
            await self._defer(row, err.retry_after, f"429 retry after {err.retry_after}s")
            return True
        except (TelegramServerError, TelegramNetworkError, TimeoutError) as err:
            await self._retry_or_fail(row, f"{type(err).__name__}: {err}")
            return True
        except TelegramBadRequest as err:
            if "not modified" not in err.message:
                log.info(
                    "outbox %d: cannot edit message %d (%s); sending it new",
                    row.id,
                    message_id,
                    err.message,
                )
                return False
        except TelegramAPIError as err:
            await self._retry_or_fail(row, f"{type(err).__name__}: {err.message}")
            return True
        self.pacer.sent(row.chat_id, time.monotonic())
        async with self.db.session() as session:
            await outbox.record_part(session, row.id, 0, [message_id])
            await outbox.mark_sent(session, row.id)
        return True

    async def _defer(self, row: Outbox, seconds: float, error: str) -> None:
        async with self.db.session() as session:
            await outbox.defer(
                session, row.id, utcnow() + timedelta(seconds=seconds), error, attempt=False
            )

    async def _retry_or_fail(self, row: Outbox, error: str) -> None:
        attempts = row.attempts + 1
        if attempts >= self.max_attempts:
            await self._fail(row, f"gave up after {attempts} attempts: {error}")
            return
        backoff = min(self.max_backoff, 2.0**attempts)
        log.warning(
            "outbox %d to chat %d: %s; attempt %d of %d, next in %.0f s",
            row.id,
            row.chat_id,
            error,
            attempts,
            self.max_attempts,
            backoff,
        )
        async with self.db.session() as session:
            await outbox.defer(
                session, row.id, utcnow() + timedelta(seconds=backoff), error, attempt=True
            )

    async def _fail(self, row: Outbox, error: str) -> None:
        log.error("outbox %d to chat %d failed for good: %s", row.id, row.chat_id, error)
        async with self.db.session() as session:
            await outbox.mark_failed(session, row.id, error)


def _keyboard(buttons: list[list[dict[str, str]]] | None) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton.model_validate(button) for button in row] for row in buttons
        ]
    )
