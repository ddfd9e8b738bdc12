"""/status: the fleet at a glance, read from the database and the live poll monitor."""

from __future__ import annotations

from collections.abc import Mapping

from aiogram import Router
from aiogram.types import Message

from bot.config import Config, Role
from bot.polling import PollMonitor
from bot.views import status as views
from handlers.registry import command
from storage.status import SummaryCache

router = Router(name=__name__)


@command(router, "status", Role.viewer)
async def status(
    message: Message,
    status_cache: SummaryCache,
    config: Config,
    poll_monitor: PollMonitor,
    job_intervals: Mapping[str, int],
) -> None:
    """Fleet summary: agents, tasks, approvals, incidents, runs in flight, jobs"""
    summary = await status_cache.get()
    await message.answer(views.status(summary, config, poll_monitor.last_poll_at, job_intervals))
