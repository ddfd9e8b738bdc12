"""The Bot object every part of the process talks to Telegram with (polling, the sender, the
outside watchdog)."""

from __future__ import annotations

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode

from bot.config import Config
from bot.pacing import Pacer, PacingMiddleware
from bot.polling import PollMonitor


def make_bot(
    config: Config, monitor: PollMonitor | None = None, pacer: Pacer | None = None
) -> Bot:
    """The Bot; with `pacer`, every message it sends (direct replies too) takes a slot of
    Telegram's limits from it (see bot.pacing)."""
    api = config.telegram.api_base
    session = AiohttpSession(api=TelegramAPIServer.from_base(api)) if api else AiohttpSession()
    if monitor is not None:
        session.middleware(monitor)
    if pacer is not None:
        session.middleware(PacingMiddleware(pacer))
    return Bot(
        token=config.telegram.token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )
