"""The loop shared by the workers that carry out claimed rows (deploys, approved commands):
claim every row that may start, carry each one out in its own task, then sleep until woken,
`idle_poll` passes or `stop` is set. On the way out it waits for the rows in progress; if it
is cancelled (shutdown past its grace) it cancels them, which kills their commands, and the
next start reports them interrupted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

log = logging.getLogger(__name__)

Row = TypeVar("Row")


async def run_claimed(
    kind: str,
    *,
    stop: asyncio.Event,
    wake: asyncio.Event,
    idle_poll: float,
    claim: Callable[[], Awaitable[Row | None]],
    carry_out: Callable[[Row], Coroutine[object, object, None]],
    name: Callable[[Row], str],
    after_each: Callable[[], None] | None = None,
) -> None:
    """Until `stop`: claim rows with `claim` and run `carry_out` on each; `after_each` is
    called when one ends (a deploy's target is free again, say)."""
    active: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        active.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", kind, exc_info=task.exception())
        if after_each is not None:
            after_each()

    try:
        while not stop.is_set():
            wake.clear()
            try:
                while (row := await claim()) is not None:
                    task = asyncio.create_task(carry_out(row), name=name(row))
                    active.add(task)
                    task.add_done_callback(done)
            except Exception:  # the worker must outlive a database hiccup
                log.exception("%s pass failed; retrying in %.0f s", kind, idle_poll)
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
            await asyncio.wait(waiters, timeout=idle_poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        if active:
            await asyncio.wait(set(active))
    finally:
        left = list(active)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
