"""Pacing to Telegram's limits: 1 message/s per chat, 20/min per group, 30/s overall.

One `Pacer` per process is shared by the outbox sender and by the bot's session (see
`PacingMiddleware`), so a storm of direct replies and a burst of feed messages together stay
under the overall limit. The sender paces a chat fully (its own pace, the group window, a
`retry_after` block); a direct reply only takes a slot of the overall limit and, in a group, of
the group's window: a person's private chat sees a reply only as fast as they type.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import defaultdict, deque

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.methods import Response, SendChatAction, TelegramMethod
from aiogram.methods.base import TelegramType

# Telegram's documented limits for bots.
PER_CHAT_INTERVAL = 1.0
GROUP_PER_MINUTE = 20
GROUP_WINDOW = 60.0
GLOBAL_PER_SECOND = 30
# Added to every interval and window: a message counts from when we start the request, Telegram
# counts from when it arrives, and two requests do not take the same time on the way.
MARGIN = 0.05

# At most this many messages overall within their share of the second (see `wait_for`).
SPREAD_BURST = 5

# Set while the sender makes a call it already paced, so the session middleware lets it by.
_PACED: contextvars.ContextVar[bool] = contextvars.ContextVar("fleet_paced", default=False)


def is_group(chat_id: int) -> bool:
    """Groups, supergroups and channels have negative ids."""
    return chat_id < 0


class Pacer:
    """Tracks recent sends and says how long a chat must wait before its next message.

    `per_second` is the overall limit (Telegram's 30/s; a test or benchmark against a local
    server may raise it); `margin` is added to each interval and window."""

    def __init__(self, per_second: int = GLOBAL_PER_SECOND, margin: float = 0.0) -> None:
        self.per_second = per_second
        self.margin = margin
        self._last: dict[int, float] = {}
        self._blocked_until: dict[int, float] = {}
        self._group: dict[int, deque[float]] = defaultdict(deque)
        self._all: deque[float] = deque()
        # When the calls counted by `acquire` really started, per chat (see `space`).
        self._started: dict[int, deque[float]] = {}
        self._started_all: deque[float] = deque()
        self._turn = asyncio.Lock()

    def wait_for(
        self, chat_id: int | None, now: float, *, own_pace: bool = True, overall: bool = True
    ) -> float:
        """Seconds until `chat_id` may get its next message (0: now). `chat_id` None asks for
        the overall limit only; `own_pace=False` leaves out the chat's 1/s pace (direct
        replies), `overall=False` the overall limit."""
        waits = [0.0]
        if chat_id is not None:
            waits.append(self._blocked_until.get(chat_id, 0.0) - now)
            if own_pace:
                waits.append(self._last.get(chat_id, -1e9) + PER_CHAT_INTERVAL + self.margin - now)
            if is_group(chat_id):
                window = self._group.get(chat_id)
                if window:
                    while window and window[0] <= now - GROUP_WINDOW - self.margin:
                        window.popleft()
                    if len(window) >= GROUP_PER_MINUTE:
                        waits.append(window[-GROUP_PER_MINUTE] + GROUP_WINDOW + self.margin - now)
                    if not window:
                        del self._group[chat_id]
        if not overall:
            return max(waits)
        window_all = self._all
        while window_all and window_all[0] <= now - 1 - self.margin:
            window_all.popleft()
        burst = min(SPREAD_BURST, self.per_second)
        if len(window_all) >= burst:
            # Spread over the second, not 30 at once: a burst of calls arrives less evenly than
            # it left (new connections, a busy machine) and would run into the next second's.
            # A few at once are allowed, so a late wake-up is made up for, not carried on.
            waits.append(window_all[-burst] + burst * (1 + self.margin) / self.per_second - now)
        if len(window_all) >= self.per_second:
            waits.append(window_all[-self.per_second] + 1 + self.margin - now)
        return max(waits)

    def block(self, chat_id: int, until: float) -> None:
        """Telegram asked us to wait (429 retry_after) before writing to this chat again."""
        self._blocked_until[chat_id] = max(until, self._blocked_until.get(chat_id, 0.0))

    def sent(self, chat_id: int | None, now: float) -> None:
        """Count a message to `chat_id` (None: counted overall only)."""
        if chat_id is not None:
            self._last[chat_id] = now
            if is_group(chat_id):
                self._group[chat_id].append(now)
        self._all.append(now)
        self._forget_old(now)

    def seed(self, chat_id: int, at: float) -> None:
        """A message sent before this process started (read from the database), so a restart
        does not begin a group's minute with an empty window."""
        self._last[chat_id] = max(at, self._last.get(chat_id, -1e9))
        for windows in (self._group, self._started) if is_group(chat_id) else (self._started,):
            window = windows.setdefault(chat_id, deque())
            window.append(at)
            if len(window) > 1 and window[-2] > at:
                windows[chat_id] = deque(sorted(window))

    async def acquire(self, chat_id: int | None, *, own_pace: bool = True) -> None:
        """Wait until `chat_id` may get a message, then count it. One event loop: the check and
        the count happen without a switch in between, so two callers never take one slot.

        A caller first waits for its chat's turn on its own, then queues (first come, first
        served) for the overall limit: only the head of the queue waits for the next slot, not
        every caller waking for each slot and all but one going back to sleep."""
        while True:
            await self._chat_turn(chat_id, own_pace)
            async with self._turn:
                while True:
                    now = time.monotonic()
                    if self.wait_for(chat_id, now, **self._chat(own_pace)) > 0:
                        break  # the chat's turn moved (a 429, a direct reply): wait outside
                    wait = self.wait_for(chat_id, now, own_pace=own_pace)
                    if wait <= 0:
                        self.sent(chat_id, now)
                        return
                    await asyncio.sleep(wait)

    async def _chat_turn(self, chat_id: int | None, own_pace: bool) -> None:
        while True:
            wait = self.wait_for(chat_id, time.monotonic(), **self._chat(own_pace))
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    @staticmethod
    def _chat(own_pace: bool) -> dict[str, bool]:
        return {"own_pace": own_pace, "overall": False}

    async def space(self, chat_id: int) -> None:
        """Right before the call of a message `acquire` counted: wait until the chat's previous
        call started at least its pace ago, fewer than 20 calls of a group and fewer than
        `per_second` calls in all started within their windows. The count was taken before the
        caller's database write, and a slow write must not bring two calls closer than the
        limits; `acquire` keeps how many callers get that far to the rate of the limits."""
        started = self._started.setdefault(chat_id, deque())
        started_all = self._started_all
        while True:
            now = time.monotonic()
            while started and started[0] <= now - GROUP_WINDOW - self.margin:
                started.popleft()
            while started_all and started_all[0] <= now - 1 - self.margin:
                started_all.popleft()
            waits = [0.0]
            if len(started_all) >= self.per_second:
                waits.append(started_all[-self.per_second] + 1 + self.margin - now)
            if started:
                waits.append(started[-1] + PER_CHAT_INTERVAL + self.margin - now)
            if is_group(chat_id) and len(started) >= GROUP_PER_MINUTE:
                waits.append(started[-GROUP_PER_MINUTE] + GROUP_WINDOW + self.margin - now)
            wait = max(waits)
            if wait <= 0:
                started.append(now)
                started_all.append(now)
                if not is_group(chat_id):
                    while len(started) > 1:
                        started.popleft()
                return
            await asyncio.sleep(wait)

    def note_start(self, chat_id: int | None, now: float) -> None:
        """A call counted by `acquire` starts now without a `space` (a direct reply)."""
        started_all = self._started_all
        while started_all and started_all[0] <= now - 1 - self.margin:
            started_all.popleft()
        started_all.append(now)
        if chat_id is not None and is_group(chat_id):
            started = self._started.setdefault(chat_id, deque())
            while started and started[0] <= now - GROUP_WINDOW - self.margin:
                started.popleft()
            started.append(now)

    def _forget_old(self, now: float) -> None:
        # Bounded memory: chats not written to for a while need no entry.
        if len(self._last) > 10_000:
            horizon = now - GROUP_WINDOW - 1
            self._last = {c: t for c, t in self._last.items() if t > horizon}
            self._started = {c: d for c, d in self._started.items() if d and d[-1] > horizon}
            self._blocked_until = {c: t for c, t in self._blocked_until.items() if t > now}


def paced() -> contextvars.Token[bool]:
    """Mark the calls made from here on (in this task) as paced already; reset the token."""
    return _PACED.set(True)


def unpaced(token: contextvars.Token[bool]) -> None:
    _PACED.reset(token)


class PacingMiddleware(BaseRequestMiddleware):
    """A bot-session middleware: every message a handler sends (a direct reply) first takes a
    slot of the overall limit, and in a group one of the group's minute, from the shared
    `Pacer`. Calls the outbox sender paced itself pass straight through."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if not _PACED.get() and counts_as_message(method):
            chat = getattr(method, "chat_id", None)
            target = chat if isinstance(chat, int) else None
            await self.pacer.acquire(target, own_pace=False)
            self.pacer.note_start(target, time.monotonic())
        return await make_request(bot, method)


def counts_as_message(method: TelegramMethod[TelegramType]) -> bool:
    """sendMessage, sendPhoto, ..., copyMessage, forwardMessage: what Telegram's message limits
    count. Edits, callback answers and chat actions are not messages."""
    name = method.__api_method__
    if isinstance(method, SendChatAction):
        return False
    return name.startswith("send") or name in {"copyMessage", "forwardMessage"}
