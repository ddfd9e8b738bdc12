"""Logging: one format, UTC times, and secrets replaced before anything is written."""

from __future__ import annotations

import logging
import sys
import time

from bot.redact import Redactor


class RedactingFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]

    def __init__(self, secrets: list[str]) -> None:
        super().__init__("%(asctime)sZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        self.redactor = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(super().format(record))

    def redact(self, text: str) -> str:
        return self.redactor.redact(text)


class QuietPollingErrors(logging.Filter):
    """Drops aiogram's per-retry polling error lines; bot.polling.PollMonitor logs those once
    a minute instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Failed to fetch updates", "Sleep for "))


def configure_logging(secrets: list[str], level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiogram.dispatcher").addFilter(QuietPollingErrors())
    # One line per handled update is noise at fleet scale; errors still come through.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
