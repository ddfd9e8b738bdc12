"""Delivers outbox rows to Telegram: in order per chat, paced, retried, split, resumable."""

from __future__ import annotations

import asyncio
import logging
import time
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

from bot.pacing import MARGIN, Pacer, paced, unpaced
from bot.views.text import split_html
from storage import outbox
from storage.db import Database
from storage.models import Outbox, utcnow

log = logging.getLogger(__name__)

# How long the times of messages sent to groups are kept: the group limit's window, and some.
SEND_HORIZON = timedelta(seconds=120)
STOP_WAIT = 5.0


class Sender:
    """The only code that sends outbox rows. Run one per bot token (the poller lock holder).

    Each chat with a due row gets a worker task that sends that chat's rows in order, one part
    at a time, each part after `Pacer.acquire`: chats are served at once and only the shared
    limits hold them back, so a long message to one chat does not hold up the others. The times
    of messages sent are also rows (`outbox.record_send`), read back at start, so a restart or
    a new leader does not begin a group's minute with an empty window, nor write to a private
    chat within a second of the last message."""

    def __init__(
        self,
        bot: Bot,
        db: Database,
        *,
        pacer: Pacer | None = None,
        max_attempts: int = 8,
        idle_poll: float = 1.0,
        max_backoff: float = 300.0,
        max_chats: int = 100,
    ) -> None:
        self.bot = bot
        self.db = db
        self.max_attempts = max_attempts
        self.idle_poll = idle_poll
        self.max_backoff = max_backoff
        self.max_chats = max_chats
        self.pacer = pacer or Pacer(margin=MARGIN)
        self.rate_limited = 0  # 429 answers so far (the web /metrics shows it)
        self._wake = asyncio.Event()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._seeded = False
        self._last_prune = 0.0

    def wake(self) -> None:
        """Deliver now instead of at the next idle poll (after enqueueing in this process)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set. Sends in flight finish; the rest stays queued."""
        self._stop = stop
        while not stop.is_set():
            try:
                delay = await self._dispatch()
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
        if self._workers:
            # A worker stops after its part in flight; one still waiting for its turn (a group
            # at its limit) is cancelled before it sends: its row stays queued.
            _, waiting = await asyncio.wait(set(self._workers.values()), timeout=STOP_WAIT)
            for task in waiting:
                task.cancel()

    async def deliver_due(self) -> float:
        """One pass: every chat with a due row is served (at once) until none of its rows is due
        and can go out now. Returns seconds until the next pass."""
        delay = await self._dispatch()
        while self._workers:
            await asyncio.wait(set(self._workers.values()))
            delay = await self._dispatch()
        return delay

    async def _dispatch(self) -> float:
        """Start a worker for each chat whose head row is due and that has none yet. Returns
        seconds until a chat without a worker is due (a worker wakes the loop when it ends)."""
        if not self._seeded:
            await self._seed()
        busy = set(self._workers)
        now = time.monotonic()
        async with self.db.session() as session:
            rows = await outbox.due_heads(session, utcnow(), exclude=busy)
        delay = self.idle_poll
        for row in rows:
            if len(self._workers) >= self.max_chats:
                break
            # The overall limit is the worker's to wait for; this is about the chat.
            wait = self.pacer.wait_for(row.chat_id, now, overall=False)
            if wait > 0:
                delay = min(delay, wait)
                continue
            task = asyncio.create_task(self._serve(row), name=f"outbox-chat:{row.chat_id}")
            self._workers[row.chat_id] = task
        async with self.db.session() as session:
            next_at = await outbox.next_due_at(session, exclude=set(self._workers))
        if next_at is not None:
            delay = min(delay, max(0.0, (next_at - utcnow()).total_seconds()))
        return max(delay, 0.02)

    async def _serve(self, first: Outbox) -> None:
        """Send `first`, then the chat's next rows while they are due."""
        chat_id = first.chat_id
        row: Outbox | None = first
        try:
            while row is not None:
                try:
                    await self._deliver(row)
                except Exception:  # one row's bug must not stop the chat or the sender
                    log.exception("outbox %d to chat %d: delivery failed", row.id, chat_id)
                    return
                if self._stop.is_set():
                    return
                async with self.db.session() as session:
                    row = await outbox.head_of(session, chat_id)
                if row is not None and row.next_attempt_at > utcnow():
                    return  # waiting (retry_after, backoff): the loop comes back for it
        finally:
            self._workers.pop(chat_id, None)
            self._wake.set()

    async def _seed(self) -> None:
        """Read the recent sends (another process's, before a restart or a takeover)."""
        now_wall, now = utcnow(), time.monotonic()
        async with self.db.session() as session:
            await outbox.prune_sends(session, now_wall - SEND_HORIZON)
            recent = await outbox.recent_sends(session, now_wall - SEND_HORIZON)
        for chat_id, at in recent:
            self.pacer.seed(chat_id, now - (now_wall - at).total_seconds())
        self._seeded = True
        self._last_prune = now

    async def _send_part(self, row: Outbox, index: int) -> bool:
        """Wait for the chat's turn and mark the part in flight; False if the row was settled
        elsewhere since it was read (requeued, failed by hand)."""
        await self.pacer.acquire(row.chat_id)
        if self._stop.is_set():
            return False  # stopping: the rest of the row goes out after the restart
        async with self.db.session() as session:
            if not await outbox.begin_send(session, row.id, index):
                return False
            # Every chat's (a private chat's 1 s spacing too): the next leader, or this
            # process after a kill -9, starts from when the last message went out.
            await outbox.record_send(session, row.chat_id, utcnow())
        # A write that waited for the database must not bring two calls of the chat closer.
        await self.pacer.space(row.chat_id)
        if time.monotonic() - self._last_prune > SEND_HORIZON.total_seconds():
            self._last_prune = time.monotonic()
            async with self.db.session() as session:
                await outbox.prune_sends(session, utcnow() - SEND_HORIZON)
        return True

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
        if row.in_flight_at is not None and outbox.at_most_once(row.dedup_key):
            # A publication may already be in the channel: resending could post it twice.
            await self._fail(row, outbox.IN_FLIGHT_ERROR)
            return
        if row.in_flight_at is not None:
            log.warning(
                "outbox %d to chat %d: the process stopped while part %d was being sent at %s; "
                "Telegram may or may not have it, so it is sent again and may show twice",
                row.id,
                row.chat_id,
                row.parts_sent + 1,
                row.in_flight_at.isoformat(timespec="seconds"),
            )
        if row.parts_sent >= len(parts):  # every part went out before a restart
            async with self.db.session() as session:
                await outbox.mark_sent(session, row.id)
            return
        for index in range(row.parts_sent, len(parts)):
            last = index == len(parts) - 1
            if not await self._send_part(row, index):
                return
            token = paced()
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
            except (TelegramNetworkError, TimeoutError) as err:
                if outbox.at_most_once(row.dedup_key):
                    # No answer: Telegram may have posted it. A publication is not resent.
                    await self._fail(row, outbox.IN_FLIGHT_ERROR)
                else:
                    await self._retry_or_fail(row, f"{type(err).__name__}: {err}")
                return
            except TelegramServerError as err:
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
            finally:
                unpaced(token)
            ids.append(message.message_id)
            async with self.db.session() as session:
                await outbox.record_part(session, row.id, index, ids)
                if last:
                    await outbox.mark_sent(session, row.id)

    async def _edit(self, row: Outbox, chat_id: int, message_id: int) -> bool:
        """Edit the original message. False when it cannot be edited any more (deleted, too
        old): the caller then sends the row as a new message, so the news is not lost."""
        await self.pacer.acquire(row.chat_id)
        token = paced()
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
        finally:
            unpaced(token)
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
