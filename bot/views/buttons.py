"""Callback data of buttons that services put on messages (through the outbox) and handlers
answer: defined here, below both, so neither imports the other."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class RunCb(CallbackData, prefix="run"):
    """A button on a run's line in the activity feed: `a` is "stop"; `id` the run."""

    a: str
    id: int


def stop_button(run_id: int) -> dict[str, str]:
    return {"text": "⏹ Stop", "callback_data": RunCb(a="stop", id=run_id).pack()}
