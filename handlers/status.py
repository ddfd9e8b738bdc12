"""/status: the fleet at a glance, read from the database and the live poll monitor."""

from __future__ import annotations

from collections.abc import Mapping

from aiogram.types import Message

from bot.config import Config, Role
from bot.polling import PollMonitor
from bot.views import status as views
from handlers.registry import Routes, command
from storage.models import utcnow
from storage.nodes import alive_within
from storage.status import SummaryCache

router = Routes(__name__)


@command(router, "status", Role.viewer)
async def status(
    message: Message,
    status_cache: SummaryCache,
    config: Config,
    poll_monitor: PollMonitor,
    job_intervals: Mapping[str, int],
) -> None:
    """Fleet summary: agents, tasks, approvals, incidents, nodes, runs in flight, jobs"""
    summary = await status_cache.get()
    last_poll = poll_monitor.last_poll_at
    alive = alive_within(config.node.renew_every)
    await message.answer(views.status(summary, config, last_poll, job_intervals, utcnow(), alive))
